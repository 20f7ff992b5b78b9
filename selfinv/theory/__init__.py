"""selfinv.theory"""
