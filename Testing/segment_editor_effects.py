"""What Segment Editor effects do to a segmentation, reproduced without Qt from Slicer's own source: the module's
MRML code is tested against the segments a reader's edits really leave (names, tags, shared labelmap layers)."""

from __future__ import annotations

import slicer
import vtk


def split_islands_to_segments(seg, volume, segment_id) -> list[str]:
    """What Segment Editor's Islands effect, "Split islands to segments", does to a segmentation: the steps of
    ``SegmentEditorIslandsEffect.splitSegments`` (Slicer's source) without its Qt parts. Each island but the largest
    becomes a new ``vtkSegment`` named "<selected name>_<n>" (n from 2), with no tags, sharing the selected
    segment's labelmap layer; the selected segment keeps the largest. Returns the new segment ids."""
    logic, editor_node = _editor(seg, volume)
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    # scriptedEffect.selectedSegmentLabelmap(): the selected segment alone, on the editor's reference geometry.
    editor_node.SetSelectedSegmentID(segment_id)
    assert logic.UpdateSelectedSegmentLabelmap()
    selected_labelmap = logic.GetSelectedSegmentLabelmap()
    cast_in = vtk.vtkImageCast()
    cast_in.SetInputData(selected_labelmap)
    cast_in.SetOutputScalarTypeToUnsignedInt()
    island_math = slicer.vtkITKIslandMath()
    island_math.SetInputConnection(cast_in.GetOutputPort())
    island_math.SetFullyConnected(False)
    island_math.SetMinimumSize(0)
    island_math.Update()
    island_image = slicer.vtkOrientedImageData()
    island_image.ShallowCopy(island_math.GetOutput())
    to_world = vtk.vtkMatrix4x4()
    selected_labelmap.GetImageToWorldMatrix(to_world)
    island_image.SetImageToWorldMatrix(to_world)
    segmentation = seg.GetSegmentation()
    selected = segmentation.GetSegment(segment_id)
    label_values = vtk.vtkIntArray()
    slicer.vtkSlicerSegmentationsModuleLogic.GetAllLabelValues(label_values, island_image)

    def modifier(label_value):
        threshold = vtk.vtkImageThreshold()
        threshold.SetInputData(island_math.GetOutput())
        threshold.ThresholdBetween(label_value, label_value)
        threshold.SetInValue(1)
        threshold.SetOutValue(0)
        threshold.Update()
        image = slicer.vtkOrientedImageData()
        image.DeepCopy(threshold.GetOutput())
        image.SetGeometryFromImageToWorldMatrix(to_world)
        return image

    added = []
    for i in range(1, label_values.GetNumberOfTuples()):
        segment = slicer.vtkSegment()
        segment.SetName(f"{selected.GetName()}_{i + 1}")
        segment.AddRepresentation(binary, selected.GetRepresentation(binary))
        segmentation.AddSegment(segment)
        new_id = segmentation.GetSegmentIdBySegment(segment)
        segment.SetLabelValue(segmentation.GetUniqueLabelValueForSharedLabelmap(segment_id))
        logic.ModifySegmentByLabelmap(seg, new_id, modifier(int(label_values.GetTuple1(i))),
                                      logic.ModificationModeAdd, False, False)  # fmt: skip
        added.append(new_id)
    logic.ModifySegmentByLabelmap(seg, segment_id, modifier(int(label_values.GetTuple1(0))), logic.ModificationModeSet,
                                  False, False)  # fmt: skip
    seg.GetScene().RemoveNode(editor_node)
    return added


def paint(seg, volume, segment_id, image) -> None:
    """What the Paint effect does with a brush stroke ``image`` (a ``vtkOrientedImageData`` of 0/1): adds its
    voxels to the segment (``ModificationModeAdd``), in the segment's own labelmap layer."""
    logic, editor_node = _editor(seg, volume)
    logic.ModifySegmentByLabelmap(seg, segment_id, image, logic.ModificationModeAdd, False, False)
    seg.GetScene().RemoveNode(editor_node)


def _editor(seg, volume):
    """The Segment Editor's logic and its parameter node, on ``seg`` with ``volume`` as source."""
    scene = seg.GetScene()
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(scene)
    editor_node = scene.AddNode(slicer.vtkMRMLSegmentEditorNode())
    logic.SetSegmentEditorNode(editor_node)
    editor_node.SetAndObserveSegmentationNode(seg)
    editor_node.SetAndObserveSourceVolumeNode(volume)
    return logic, editor_node


def clone_segment(seg, segment_id) -> str:
    """What the Data module's "Clone" on a segment does (``qSlicerSubjectHierarchySegmentsPlugin::cloneSegment``):
    a deep copy of the segment (name, tags, voxels) added right below it. Returns the copy's id."""
    segmentation = seg.GetSegmentation()
    copy = slicer.vtkSegment()
    copy.DeepCopy(segmentation.GetSegment(segment_id))
    index = segmentation.GetSegmentIndex(segment_id)
    before = segmentation.GetNthSegmentID(index + 1) if index + 1 < segmentation.GetNumberOfSegments() else ""
    target = segmentation.GenerateUniqueSegmentID(segment_id)
    assert segmentation.AddSegment(copy, target, before)
    return target
