"""``gpmask demo``: an application of the runtime on a synthetic clip of changing weather.

:mod:`gpmask.demo.app` makes the clip, restores it with ``auto`` routing and writes the
videos, the PSNR report and the timeline. It stands above the runtime, which it uses
like any user would.
"""
