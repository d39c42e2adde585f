"""ONNX graph transforms, each a function ``ModelProto -> ModelProto``, as Polygraphy's
loaders are, and the one helper that runs a graph on the CPU outside the runtime.

- :mod:`gpmask.graph.fold`: a compact graph's weight rebuild folded into plain weights;
- :mod:`gpmask.graph.fp16`: the fp16 conversion;
- :mod:`gpmask.graph.rewrites`: the exact rewrites an int8 precision asks for by name
  (:mod:`~gpmask.graph.subpixel`, :mod:`~gpmask.graph.concat_split`,
  :mod:`~gpmask.graph.channel_padding`, sharing :mod:`~gpmask.graph.nodes`);
- :mod:`gpmask.graph.session`: an ONNX Runtime CPU session on a graph.

A new transform is a module here; one an int8 precision applies is also a line in
:data:`gpmask.graph.rewrites.REWRITES`.
"""
