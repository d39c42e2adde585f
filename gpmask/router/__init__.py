"""The weather router: training the classifier that picks each frame's weather, and
attaching it to a bundle (``router.onnx``). Running it is the runtime's
(:mod:`gpmask.runtime.routing`), which imports nothing from here.
"""
