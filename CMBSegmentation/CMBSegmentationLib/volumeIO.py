"""Exchange volumes between MRML nodes and the NIfTI files of the engine, geometry included.

The engine reads and writes NIfTI with nibabel, so the module does too: a voxel index (i, j, k) maps to
RAS with the same 4x4 matrix on both sides (nibabel's affine = MRML's IJKToRAS), whatever the volume's
orientation (oblique, LPS-stored, thick slices). nibabel comes with the engine's dependencies and is
imported only when a file is read or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vtk
from vtkmodules.util import numpy_support

from CMBSegmentationLib.atomicFiles import atomicPath


def matrixToNumpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A 4x4 VTK matrix as a numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def numpyToMatrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A 4x4 numpy array as a VTK matrix."""
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


#: Two placements of one grid are the same grid when no voxel corner moves more than this share of the smallest
#: voxel size between them. A copy of the engine's rule (plkd.volumes.SAME_GRID_TOLERANCE_VOXELS, grid_displacement_mm,
#: same_grid_tolerance_mm): the module runs in Slicer's Python, which cannot import plkd; a test checks that both
#: decide alike. An element-wise 1e-3 tolerance let a tilt move a 200-voxel grid's far corner by 0.2 mm.
SAME_GRID_TOLERANCE_VOXELS = 0.01


def gridDisplacementMm(affineA: np.ndarray, affineB: np.ndarray, shape) -> float:
    """How far (mm) the corners of a grid of ``shape`` voxels move between the voxel-to-RAS placements ``affineA`` and
    ``affineB`` (4x4). An affine map moves a box most at one of its corners (voxel edges at -0.5 and n - 0.5)."""
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in tuple(shape)[:3]], indexing="ij")).reshape(3, -1).T
    difference = np.asarray(affineA, dtype=np.float64) - np.asarray(affineB, dtype=np.float64)
    moved = corners @ difference[:3, :3].T + difference[:3, 3]
    return float(np.sqrt((moved**2).sum(axis=1)).max())


def sameGridToleranceMm(affine: np.ndarray) -> float:
    """The largest corner move (mm) under which two placements of a grid count as one (see
    :data:`SAME_GRID_TOLERANCE_VOXELS`): a share of the smallest voxel size of ``affine``."""
    spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return SAME_GRID_TOLERANCE_VOXELS * float(spacing.min())


def ijkToRas(volumeNode) -> np.ndarray:
    """The node's voxel-to-RAS matrix (its own frame: a parent transform is not included)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrixToNumpy(matrix)


def arrayFromVolumeNode(volumeNode) -> np.ndarray:
    """The voxels of a single-component volume node indexed ``[i, j, k]`` (a copy)."""
    image = volumeNode.GetImageData() if volumeNode is not None else None
    return arrayFromImageData(image, _name(volumeNode))


def arrayFromImageData(image, name: str = "image") -> np.ndarray:
    """The voxels of single-component VTK image data indexed ``[i, j, k]`` from the start of its extent (a copy)."""
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"volume '{name}' has no voxels")
    scalars = image.GetPointData().GetScalars()
    if scalars.GetNumberOfComponents() != 1:
        raise ValueError(f"volume '{name}' has {scalars.GetNumberOfComponents()} components; need 1")
    dims = image.GetDimensions()
    # VTK stores x fastest: reshaped C-order that is [k, j, i].
    return numpy_support.vtk_to_numpy(scalars).reshape(dims[::-1]).transpose(2, 1, 0).copy()


def updateVolumeNodeFromArray(volumeNode, array: np.ndarray, affine: np.ndarray) -> None:
    """Give ``volumeNode`` the voxels ``array`` (indexed ``[i, j, k]``) and the voxel-to-RAS ``affine``."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(*array.shape)
    flat = np.ascontiguousarray(array.transpose(2, 1, 0)).ravel()
    vtkArray = numpy_support.numpy_to_vtk(flat, deep=True, array_type=numpy_support.get_vtk_array_type(flat.dtype))
    image.GetPointData().SetScalars(vtkArray)
    volumeNode.SetIJKToRASMatrix(numpyToMatrix(np.asarray(affine, dtype=float)))
    volumeNode.SetAndObserveImageData(image)


def writeArrayAsNifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an ``[i, j, k]`` array with its IJK-to-RAS ``affine`` as NIfTI (qform = sform), atomically."""
    import nibabel

    array = np.asarray(array)
    if array.dtype in (np.int64, np.uint64):
        # nibabel refuses 64-bit integers ("may cause incompatibilities"), so Apply on a volume of type long failed
        # with nibabel's message: int32 holds every value of a scan or label map; beyond it, float64 keeps them exactly.
        fits = array.size == 0 or (int(array.min()) >= -(2**31) and int(array.max()) < 2**31)
        array = array.astype(np.int32 if fits else np.float64)
    image = nibabel.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomicPath(path) as tmp:
        nibabel.save(image, str(tmp))
    return Path(path)


def writeVolumeNodeAsNifti(volumeNode, path: str | os.PathLike[str]) -> Path:
    """Write a volume node to ``path`` (``.nii.gz``) with its geometry, atomically."""
    return writeArrayAsNifti(arrayFromVolumeNode(volumeNode), ijkToRas(volumeNode), path)


def niftiAffine(image) -> np.ndarray:
    """The voxel-to-RAS affine of a nibabel NIfTI image as ``plkd predict`` and Slicer place it: the sform when its code
    is set, else the qform when its code is set (nibabel's ``affine``), else, with no orientation at all, where ITK
    (Slicer's reader) puts it: the identity in LPS, RAS ``(-i*dx, -j*dy, k*dz)``. nibabel's own fallback flips x only
    and centres the grid, which is where neither Slicer nor the engine shows the scan."""
    header = image.header
    if int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0:
        return np.asarray(image.affine, dtype=float)
    zooms = np.abs(np.asarray(header["pixdim"][1:4], dtype=float))
    zooms = np.where(zooms > 0, zooms, 1.0)
    return np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])


def readNifti(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file: (voxels indexed ``[i, j, k]``, voxel-to-RAS affine)."""
    import nibabel

    image = nibabel.load(str(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, niftiAffine(image)


@dataclass(frozen=True)
class FileGrid:
    """How the voxels of a volume node lie in the NIfTI file (or pair) it was loaded from (see :func:`fileGrid`)."""

    #: The file's header (nibabel), as read.
    header: object
    #: Node axis ``a`` is file axis ``axes[a]``, running the other way when ``flips[a]``.
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    #: How far (mm) the file's own placement (sform, else qform: :func:`niftiAffine`) puts the voxels from the node's.
    movedMm: float

    def toFile(self, array: np.ndarray) -> np.ndarray:
        """An ``[i, j, k]`` array on the node's grid in the file's voxel order."""
        flipped = np.flip(array, tuple(a for a in range(3) if self.flips[a]))
        return np.transpose(flipped, tuple(int(a) for a in np.argsort(self.axes)))


def fileGrid(volumeNode, path: str | os.PathLike[str] | None) -> FileGrid | None:
    """Where the voxels of ``volumeNode`` lie in the NIfTI file (or pair) ``path`` it was loaded from; None when
    ``path`` is not a readable NIfTI file or its voxels are not the node's (edited since, another file).

    Slicer's reader may flip axes (a file stored with a left-handed voxel order, as dcm2niix writes axial scans, comes
    in with k reversed): the node's voxels are matched to the file's through the flip or axis order that makes them
    equal (the nearest placement when several do, as voxels symmetric under a flip match more than one way)."""
    # A NIfTI pair (.hdr + .img, which Slicer loads and the batch takes) is placed by the same forms as a .nii file.
    if (
        path is None
        or not str(path).lower().endswith((".nii", ".nii.gz", ".hdr", ".img", ".hdr.gz", ".img.gz"))
        or volumeNode.GetImageData() is None
    ):
        return None
    import itertools

    import nibabel

    try:
        nodeVoxels = arrayFromVolumeNode(volumeNode)
        image = nibabel.load(str(path))
        fileVoxels = np.asanyarray(image.dataobj)
        fileAffine = niftiAffine(image)
    except Exception:  # noqa: BLE001 - a file that cannot be read says nothing about the volume's placement
        return None
    if fileVoxels.ndim == 4 and fileVoxels.shape[3] == 1:
        fileVoxels = fileVoxels[..., 0]
    if fileVoxels.ndim != 3:
        return None
    found = []
    for order in itertools.permutations(range(3)):
        turned = np.transpose(fileVoxels, order)
        if turned.shape != nodeVoxels.shape:
            continue
        for flips in itertools.product((False, True), repeat=3):
            axes = tuple(a for a in range(3) if flips[a])
            if not np.array_equal(np.flip(turned, axes) if axes else turned, nodeVoxels):
                continue
            # Node voxel (i, j, k) is file voxel nodeToFile @ (i, j, k, 1).
            nodeToFile = np.zeros((4, 4))
            nodeToFile[3, 3] = 1.0
            for nodeAxis, fileAxis in enumerate(order):
                nodeToFile[fileAxis, nodeAxis] = -1.0 if flips[nodeAxis] else 1.0
                nodeToFile[fileAxis, 3] = nodeVoxels.shape[nodeAxis] - 1 if flips[nodeAxis] else 0.0
            moved = gridDisplacementMm(ijkToRas(volumeNode), fileAffine @ nodeToFile, nodeVoxels.shape)
            found.append(FileGrid(image.header, tuple(order), tuple(flips), moved))
    return min(found, key=lambda grid: grid.movedMm, default=None)


def niftiPlacementMm(volumeNode, path: str | os.PathLike[str] | None) -> float | None:
    """How far (mm) ``volumeNode`` places the voxels of the NIfTI file (or pair) ``path`` from where nibabel, FSL and
    ``plkd predict`` place them (the sform when its code is set, else the qform; with neither, as Slicer does:
    :func:`niftiAffine`); None when ``path`` is not a readable NIfTI file or its voxels are not the node's (see
    :func:`fileGrid`, which also matches a voxel order Slicer's reader changed). Not 0 when the file's qform and sform
    differ and Slicer (ITK) takes the qform (sform code 2 beside qform code 1), or when the volume was moved in Slicer
    since it was loaded."""
    grid = fileGrid(volumeNode, path)
    return None if grid is None else grid.movedMm


def writeLabelsOnFileGrid(labels: np.ndarray, grid: FileGrid, path: str | os.PathLike[str]) -> Path:
    """Write an integer ``[i, j, k]`` label map of a volume's grid in the voxel order and with the header of the file
    the volume was loaded from (``grid``, see :func:`fileGrid`), atomically: qform, sform and their codes, units and
    the rest as the file has them; no scaling (the file's ``scl_slope`` would scale the labels), no intent, no display
    range. The label map then lies on the scan's voxels in every tool, voxel-wise ones included."""
    import nibabel

    header = grid.header
    klass = nibabel.Nifti2Image if isinstance(header, nibabel.Nifti2Header) else nibabel.Nifti1Image
    copied = klass.header_class.from_header(header)
    data = np.ascontiguousarray(grid.toFile(np.asarray(labels)))
    image = klass(data, None, header=copied)
    # A 3-D label map of a 4-D file of one volume: nibabel resets pixdim[4:] as it gives the header a 3-D shape.
    image.header["pixdim"][4:] = np.asarray(copied["pixdim"], dtype=np.float64)[4:]
    image.header.set_intent("none", (), name="")
    image.set_data_dtype(data.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"] = image.header["cal_max"] = 0.0
    with atomicPath(path) as tmp:
        nibabel.save(image, str(tmp))
    return Path(path)


def loadLabelMapNode(scene, path: str | os.PathLike[str], name: str | None = None):
    """Read an integer label map file into a new ``vtkMRMLLabelMapVolumeNode`` of ``scene``."""
    data, affine = readNifti(path)
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.mod(data, 1) == 0):
            raise ValueError(f"{path}: a label map must hold integers")
        data = data.astype(np.int32)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name or Path(path).name.split(".")[0])
    updateVolumeNodeFromArray(node, data.astype(np.int32, copy=False), affine)
    return node


def _name(node) -> str:
    return node.GetName() if node is not None else "(none)"
