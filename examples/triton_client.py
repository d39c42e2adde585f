"""Restore images with a gpmask model on Triton (``gpmask serve`` or an exported repository).

    python examples/triton_client.py rainy.png -o restored.png [--weather snow]
        [--url 127.0.0.1:8000 | --grpc 127.0.0.1:8001]

Sends the image as UINT8 RGB [1, H, W, 3] to model ``gpmask``, with the request parameter
``weather`` when given (else the server's default, ``auto`` on a bundle with a router),
and prints the weather the server restored it with (Triton's classification output).
Needs ``tritonclient[http,grpc]`` and OpenCV.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np


def restore(frame_rgb: np.ndarray, url: str, weather: str | None = None,
            grpc: bool = False) -> tuple[np.ndarray, str]:
    """One HxWx3 uint8 RGB frame restored by the server, and the weather it used."""
    if grpc:
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    client = client_module.InferenceServerClient(url)
    frames = frame_rgb[None]
    image = client_module.InferInput("image", list(frames.shape), "UINT8")
    image.set_data_from_numpy(frames)
    result = client.infer(
        "gpmask", [image], parameters={"weather": weather} if weather else None,
        outputs=[client_module.InferRequestedOutput("restored"),
                 client_module.InferRequestedOutput("weather", class_count=1)])
    label = result.as_numpy("weather").ravel()[0].decode().split(":")[2]  # "1.0:2:snow"
    return result.as_numpy("restored")[0], label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="an image file (any size)")
    parser.add_argument("-o", "--output", required=True, help="where to write the result")
    parser.add_argument("--weather", help="a weather of the bundle, common, clear or auto "
                                          "(default: the server's)")
    parser.add_argument("--url", default="127.0.0.1:8000", help="HTTP address (default "
                                                                "127.0.0.1:8000)")
    parser.add_argument("--grpc", metavar="ADDRESS", help="use gRPC at this address instead")
    args = parser.parse_args()
    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        parser.error(f"cannot read {args.image}")
    restored, weather = restore(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), args.grpc or args.url,
                                args.weather, grpc=bool(args.grpc))
    if not cv2.imwrite(args.output, cv2.cvtColor(restored, cv2.COLOR_RGB2BGR)):
        parser.error(f"cannot write {args.output}")
    print(f"{args.output}: restored as {weather}")


if __name__ == "__main__":
    main()
