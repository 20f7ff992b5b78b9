"""selfinv.models"""
