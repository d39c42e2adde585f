"""Weather data without torch: clean images, synthetic weather, paired folders, batches.

- :mod:`gpmask.data.clean`: clean images (scikit-image's shipped samples, a folder).
- :mod:`gpmask.data.synthetic`: seeded rain-with-haze, raindrop and snow rendering.
- :mod:`gpmask.data.paired_folders`: paired folder data sets in the public benchmarks' layouts.
- :mod:`gpmask.data.sources`: training batches and evaluation pairs from either source.

numpy and OpenCV only, so the runtime's demo can render weather without torch.
"""
