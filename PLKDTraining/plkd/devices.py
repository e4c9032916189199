"""The compute devices a user can ask for (``--device``), kept free of torch so that the command
line starts fast; :mod:`plkd.inference.device` resolves them to a ``torch.device``."""

#: ``auto`` picks CUDA, then MPS (Apple), then the CPU.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
