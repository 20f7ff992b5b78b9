"""selfinv: train image reconstruction networks from measurements alone.

The library (physics, losses, transforms, models, theory) depends on torch and
numpy only; the training engine and the CLI use Lightning.
"""

__version__ = "0.1.0"
