"""MLServer custom runtimes for the peer benchmark: the workbench's tabular and text models (``peer_models``).

MLServer (1.7.1) ships no ONNX runtime, so each model is a small ``MLModel`` over
:mod:`peer_models`. ``bench_peers.py`` writes the model settings (adaptive batching:
``max_batch_size`` 32, ``max_batch_time`` 5 ms) and runs ``mlserver start`` in
``benchmarks/peers/.venv-mlserver`` with this folder on ``PYTHONPATH``. MLServer merges the
requests of a batch along their first dimension and splits the answer back the same way.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from peer_models import Outputs, Tabular, Text, v2_outputs


class _Runtime(MLModel):
    kind = ""

    def _spec(self) -> dict[str, Any]:
        assert self.settings.parameters is not None and self.settings.parameters.uri is not None
        with open(self.settings.parameters.uri) as file:
            spec: dict[str, Any] = json.load(file)[self.kind]
        return spec

    def _answer(self, outputs: Outputs) -> InferenceResponse:
        return InferenceResponse(model_name=self.name, outputs=[ResponseOutput(**o) for o in v2_outputs(outputs)])


class TabularRuntime(_Runtime):
    kind = "tabular"

    async def load(self) -> bool:
        self.model = Tabular(self._spec())
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        return self._answer(self.model.predict(rows))


class TextRuntime(_Runtime):
    kind = "text"

    async def load(self) -> bool:
        self.model = Text(self._spec())
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        sentences = StringCodec.decode_input(payload.inputs[0])
        return self._answer(self.model.predict(sentences))
