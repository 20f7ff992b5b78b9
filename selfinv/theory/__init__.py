"""Identifiability: the rank conditions for learning from measurements alone."""

from selfinv.theory.equivariance import equivariance_residual, null_space_basis
from selfinv.theory.identifiability import IdentifiabilityReport, SpectrumSummary, identifiability
from selfinv.theory.operator_matrix import operator_matrix, physics_in_dtype

__all__ = ["IdentifiabilityReport", "SpectrumSummary", "identifiability", "operator_matrix", "physics_in_dtype",
           "equivariance_residual", "null_space_basis"]
