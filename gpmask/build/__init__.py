"""Engines from a bundle, built on the machine that will run them.

:mod:`gpmask.build.tensorrt` builds strongly typed TensorRT 10/11 engines from a
bundle's fp32, fp16 or int8 graphs and records them in its manifest.
"""
