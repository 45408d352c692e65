"""The real-time decision service: one raw transaction in, approve / review / decline with reasons out.

A client of TF Serving's gRPC API (the real tensorflow/serving or the local server alike); imports only the
domain library (fraud.*). See docs/decisions.md.
"""
