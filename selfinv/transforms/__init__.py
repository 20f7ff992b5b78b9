"""selfinv.transforms"""
