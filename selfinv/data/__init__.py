"""Data: bundled clean images, patches, measurement data sets, file readers/writers,
tiled prediction."""

from selfinv.data.bundled import BundledDataset, list_datasets, load_dataset
from selfinv.data.measurements import MeasurementDataset, collate_measurements
from selfinv.data.patches import PatchDataset, fixed_crops, grid_patches, random_patches
from selfinv.data.readers import ReadResult, denormalize, read_image, read_measurements
from selfinv.data.tiling import tiled_apply
from selfinv.data.writers import write_image

__all__ = [
    "BundledDataset", "list_datasets", "load_dataset",
    "MeasurementDataset", "collate_measurements",
    "PatchDataset", "fixed_crops", "grid_patches", "random_patches",
    "ReadResult", "denormalize", "read_image", "read_measurements",
    "tiled_apply", "write_image",
]
