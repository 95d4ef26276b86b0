"""LitServe serving the model with its own vocabulary (decode the request, batch, predict, unbatch, encode
the response), batching on or off. LitServe reads uploads as multipart forms and decodes each request in
its inference worker.

    python -m benchmarks.peers.litserve_peer --repository DIR --category SLUG --port 8000 [--max-batch-size 16]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np

from benchmarks.peers.model import PeerModel, peer_arguments


class PeerApi(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, repository: Path, category: str, threads: int, **batching: Any) -> None:
        super().__init__(**batching)
        self._where = (repository, category, threads)
        self.model: PeerModel | None = None

    def setup(self, device: str) -> None:
        self.model = PeerModel.load(*self._where)

    # Unannotated on purpose: LitServe reads the annotation as the route's parameter type, and only the
    # default (starlette's Request) makes it parse a multipart form.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        assert self.model is not None
        return self.model.preprocess(request["image"].file.read())

    def predict(self, pixels: np.ndarray) -> Any:
        """One image ``(3, H, W)``, or with batching on a batch ``(N, 3, H, W)`` that LitServe's default
        ``batch`` stacked (its default ``unbatch`` splits the list of answers)."""
        assert self.model is not None
        if pixels.ndim == 4:
            return self.model.predict(pixels)
        return self.model.predict(pixels[None])[0]

    def encode_response(self, output: dict[str, object]) -> dict[str, object]:
        return output


def main() -> None:
    parser = peer_arguments(__doc__.splitlines()[0])
    parser.add_argument("--max-batch-size", type=int, default=1, help="1: batching off")
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="seconds a batch waits to fill")
    args = parser.parse_args()
    batching = ({"max_batch_size": args.max_batch_size, "batch_timeout": args.batch_timeout}
                if args.max_batch_size > 1 else {})
    api = PeerApi(args.repository, args.category, args.threads, **batching)
    server = ls.LitServer(api, accelerator="cpu")
    server.run(port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
