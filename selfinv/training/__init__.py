"""selfinv.training"""
