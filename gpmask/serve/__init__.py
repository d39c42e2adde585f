"""Serving past one device: a bundle on Triton Inference Server.

``gpmask serve`` runs the bundle's Restorer inside a real Triton server on this machine
(:mod:`gpmask.serve.triton`, :mod:`gpmask.serve.server`); ``gpmask export-triton``
writes a model repository for NVIDIA's Triton container (:mod:`gpmask.serve.repository`).
Both speak one protocol to clients (:mod:`gpmask.serve.protocol`). Nothing here imports
torch: serving sits on the runtime.
"""
