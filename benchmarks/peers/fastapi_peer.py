"""Plain FastAPI + uvicorn, the way the framework's documentation serves a model: one synchronous route
(FastAPI runs it in its thread pool) that preprocesses the uploaded body and runs the model on it alone.

    python -m benchmarks.peers.fastapi_peer --repository DIR --category SLUG --port 8000
"""

from __future__ import annotations

from typing import Annotated

import uvicorn
from fastapi import Body, FastAPI

from benchmarks.peers.model import PeerModel, peer_arguments


def create_app(model: PeerModel) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(image: Annotated[bytes, Body(media_type="image/jpeg")]) -> dict[str, object]:
        return model.predict(model.preprocess(image)[None])[0]

    return app


def main() -> None:
    parser = peer_arguments(__doc__.splitlines()[0])
    args = parser.parse_args()
    model = PeerModel.load(args.repository, args.category, args.threads)
    uvicorn.run(create_app(model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
