"""selfinv.data"""
