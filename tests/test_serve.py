"""``transferkit serve``: a real uvicorn process on 127.0.0.1, driven by a real HTTP client (httpx).

Real models on real data: MobileNetV2 (ImageNet weights) fine-tuned for one epoch at 32 px on 300 Animal-MNIST
images, and a bag-of-words probe on Rotten Tomatoes. A served prediction must be the one
``TransferClassifier.predict_proba`` gives on the same files or texts; every kind of bad request must get a 4xx with
a one-sentence JSON error; 200 concurrent requests must all be answered correctly, and the server must have grouped
them into fewer forward passes than requests. The ONNX Runtime engine is checked on an exported folder written here
by a small fixture exporter (``torch.onnx.export`` + ``export.json`` in the layout :mod:`transferkit.serving` names).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from transferkit import TransferClassifier, load_data
from transferkit.config import DataConfig
from transferkit.serving import Batcher
from transferkit.serving.process import local_server

N_FILES = 12
PROBA_ATOL = 1e-4  # batch composition changes float sums in the last digits; the class never changes


# ---------------------------------------------------------------------------------------------------------------
# Micro-batching mechanics (no model, no HTTP): deterministic, milliseconds
# ---------------------------------------------------------------------------------------------------------------


def _rows(items: list[float]) -> np.ndarray:
    """A stand-in model: row i is [x_i, 1 - x_i], so each request can check it got its own rows back."""
    x = np.asarray(items, dtype=np.float64)
    return np.stack([x, 1 - x], axis=1)


async def _submit_all(batcher: Batcher, requests: list[list[float]]) -> list[np.ndarray]:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(r) for r in requests))
    finally:
        await batcher.stop()


def test_batcher_groups_waiting_requests_into_one_forward_and_returns_each_its_rows() -> None:
    requests = [[i / 10] for i in range(10)]
    batcher = Batcher(_rows, max_batch=32, max_wait_ms=20)
    out = asyncio.run(_submit_all(batcher, requests))
    for r, o in zip(requests, out, strict=True):
        np.testing.assert_array_equal(o, _rows(r))
    assert batcher.stats.forwards == 1 and dict(batcher.stats.batch_sizes) == {10: 1}
    assert batcher.stats.requests == 10


def test_batcher_respects_max_batch_and_keeps_a_request_whole() -> None:
    requests = [[0.1], [0.2, 0.3], [0.4], [0.5, 0.6, 0.7, 0.8, 0.9, 0.95], [0.05]]  # 1 + 2 + 1 | 6 | 1
    batcher = Batcher(_rows, max_batch=4, max_wait_ms=20)
    out = asyncio.run(_submit_all(batcher, requests))
    for r, o in zip(requests, out, strict=True):
        np.testing.assert_array_equal(o, _rows(r))
    assert dict(batcher.stats.batch_sizes) == {4: 1, 6: 1, 1: 1}  # the 6-input request ran alone


def test_batcher_off_runs_one_forward_per_request() -> None:
    batcher = Batcher(_rows, max_batch=32, enabled=False)
    out = asyncio.run(_submit_all(batcher, [[0.1], [0.2], [0.3]]))
    assert [o[0, 0] for o in out] == [0.1, 0.2, 0.3]
    assert batcher.stats.forwards == 3


def test_batcher_hands_a_forward_failure_to_every_request_of_the_group() -> None:
    def broken(items: list[float]) -> np.ndarray:
        raise RuntimeError("boom")

    async def go() -> list[object]:
        batcher = Batcher(broken, max_batch=8, max_wait_ms=20)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit([0.5]) for _ in range(3)), return_exceptions=True)
        finally:
            await batcher.stop()

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(go()))


# ---------------------------------------------------------------------------------------------------------------
# Real models, real server
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TransferClassifier, list[Path]]:
    """A fine-tuned MobileNetV2 saved to a folder, and test images written as files (PNG, plus a large RGB JPEG)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("serve-image")
    splits = load_data(DataConfig(name="animal-mnist", train_size=300))
    clf = TransferClassifier(backbone="mobilenet_v2.imagenet", method="finetune", image_size=32, epochs=1,
                             batch_size=32, progress=False, seed=0).fit(splits.train)
    clf.save(root / "model")
    files = []
    for i in range(N_FILES - 1):
        path = root / f"test{i}.png"
        Image.fromarray(splits.test.inputs[i]).save(path)
        files.append(path)
    big = Image.fromarray(np.stack([splits.test.inputs[N_FILES]] * 3, axis=-1)).resize((300, 300))
    big.save(root / "big.jpg", quality=90)  # decoded at reduced scale (JPEG draft), as predict does for files
    files.append(root / "big.jpg")
    return root / "model", clf, files


@pytest.fixture(scope="module")
def image_server(image_model):  # noqa: ANN001, ANN201
    folder, _, _ = image_model
    # a long wait lets the concurrent test's requests gather even on a loaded machine; a lone request pays it once
    with local_server(folder, "--max-wait-ms", "100", "--max-request-mb", "0.5", "--top-k", "3") as server:
        yield server


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TransferClassifier, list[str]]:
    root = tmp_path_factory.mktemp("serve-text")
    splits = load_data(DataConfig(name="rotten-tomatoes", train_size=1000))
    # the bag of words runs in PyTorch (engine torch): exporting it to ONNX first would cost more than the whole test
    clf = TransferClassifier(backbone="bow-hash", method="probe", method_params={"engine": "torch"},
                             progress=False).fit(splits)
    clf.save(root / "model")
    return root / "model", clf, list(splits.test.inputs[:20])


def _files(paths: list[Path], field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (p.name, p.read_bytes(), "image/jpeg" if p.suffix == ".jpg" else "image/png")) for p in paths]


def _check_predictions(body: dict, names: list[str], expected: np.ndarray, classes: list[str], k: int) -> None:
    preds = body["predictions"]
    assert [p["input"] for p in preds] == names
    for p, row in zip(preds, expected, strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        assert p["label"] == classes[int(order[0])]
        assert [t["label"] for t in p["top_k"]] == [classes[int(i)] for i in order]
        np.testing.assert_allclose([t["probability"] for t in p["top_k"]], row[order], atol=PROBA_ATOL)


@pytest.mark.slow
def test_image_predictions_equal_the_estimators_on_the_same_files(image_model, image_server) -> None:  # noqa: ANN001
    folder, clf, files = image_model
    expected = clf.predict_proba([str(p) for p in files])
    assert len(set(expected.argmax(1))) > 1  # a model that tells the images apart, not one constant answer
    with httpx.Client(base_url=image_server.url, timeout=60) as client:
        meta = client.get("/metadata").json()
        assert meta["classes"] == clf.classes_ and meta["engine"] == "torch" and meta["modality"] == "image"
        assert meta["model_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
        assert meta["image_size"] == 32 and meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
        one = client.post("/predict", files=_files(files[:1], "file"))
        assert one.status_code == 200, one.text
        _check_predictions(one.json(), [files[0].name], expected[:1], clf.classes_, 3)
        many = client.post("/predict", files=_files(files))
        assert many.status_code == 200, many.text
        _check_predictions(many.json(), [p.name for p in files], expected, clf.classes_, 3)


@pytest.mark.slow
def test_text_predictions_equal_the_estimators(text_model) -> None:  # noqa: ANN001
    folder, clf, texts = text_model
    expected = clf.predict_proba(texts)
    with local_server(folder) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.post("/predict", json={"texts": texts})
        assert r.status_code == 200, r.text
        _check_predictions(r.json(), [f"texts[{i}]" for i in range(len(texts))], expected, clf.classes_, 2)
        r = client.post("/predict", json={"text": texts[3]})
        _check_predictions(r.json(), ["text[0]"], expected[3:4], clf.classes_, 2)
        assert client.get("/metadata").json()["modality"] == "text"
        for body, status in [({"texts": "one string"}, 422), ({"texts": []}, 422), ({"texts": [1, 2]}, 422),
                             ({"text": ["a list"]}, 422), ({"review": "x"}, 422), ([1, 2], 422),
                             ({"rows": [[1.0]]}, 422)]:
            _assert_error(client.post("/predict", json=body), status)
        _assert_error(client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}),
                      400)
        _assert_error(client.post("/predict", files={"file": ("a.png", b"\x89PNG", "image/png")}), 415)
        assert client.get("/health").status_code == 200


def _assert_error(r: httpx.Response, status: int) -> None:
    """A 4xx with exactly ``{"error": "<one sentence>"}``."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    sentence = body["error"]
    assert sentence.endswith(".") and "\n" not in sentence and "Traceback" not in sentence, sentence
    assert 20 < len(sentence) < 300, sentence


def _chunks(total: int, size: int = 64 * 1024):  # noqa: ANN202
    """A well-formed multipart upload that streams ``total`` bytes of file data in chunks (no Content-Length)."""
    yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    sent = 0
    while sent < total:
        yield b"\x00" * min(size, total - sent)
        sent += size


BAD_IMAGE_REQUESTS = {
    # name: (request kwargs, expected status)
    "corrupt image bytes": (dict(files={"file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\x13" * 300, "image/png")}), 415),
    "a text file": (dict(files={"file": ("notes.txt", b"just some words\n" * 20, "text/plain")}), 415),
    "an empty file": (dict(files={"file": ("empty.png", b"", "image/png")}), 400),
    "wrong field name": (dict(files={"image": ("x.png", b"\x89PNG", "image/png")}), 422),
    "a form field holding text": (dict(content=b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\nnot a '
                                          b"file\r\n--x--\r\n",
                                   headers={"content-type": "multipart/form-data; boundary=x"}), 422),
    "a form with no field": (dict(content=b"--x--\r\n", headers={"content-type": "multipart/form-data; boundary=x"}),
                             422),
    "a url-encoded form": (dict(data={"file": "not a file"}), 415),
    "empty body": (dict(), 415),
    "text sent to an image model": (dict(json={"texts": ["a dog"]}), 415),
    "another content type": (dict(content=b"abc", headers={"content-type": "text/plain"}), 415),
    "malformed multipart": (dict(content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}),
                            422),  # python-multipart reads it as a form without fields
    "multipart without a boundary": (dict(content=b"abc", headers={"content-type": "multipart/form-data"}), 400),
    "too large (Content-Length)": (dict(files={"file": ("big.png", b"\x00" * (600 * 1024), "image/png")}), 413),
    "too large (chunked, no length)": (dict(content=_chunks, headers={
        "content-type": "multipart/form-data; boundary=x"}), 413),
}


@pytest.mark.slow
def test_every_bad_request_kind_is_a_4xx_with_one_sentence(image_model, image_server) -> None:  # noqa: ANN001
    with httpx.Client(base_url=image_server.url, timeout=60) as client:
        for name, (kwargs, status) in BAD_IMAGE_REQUESTS.items():
            kwargs = dict(kwargs)
            if kwargs.get("content") is _chunks:
                kwargs["content"] = _chunks(600 * 1024)
            try:
                r = client.post("/predict", **kwargs)
            except httpx.TransportError as e:  # pragma: no cover - the server closed before reading the whole body
                pytest.fail(f"{name}: no response ({e!r})")
            try:
                _assert_error(r, status)
            except AssertionError as e:
                raise AssertionError(f"{name}: {e}") from None
        _assert_error(client.get("/predict"), 405)
        _assert_error(client.get("/nowhere"), 404)
        # a picture too large in pixels, though small as a file: refused before it is decoded
        from PIL import Image

        buf = io.BytesIO()
        Image.new("L", (8000, 6000)).save(buf, format="PNG")
        _assert_error(client.post("/predict", files={"file": ("huge.png", buf.getvalue(), "image/png")}), 413)
        assert client.get("/health").json()["status"] == "ok"  # still serving
        before = client.get("/stats").json()  # a bad request never reaches the model
        client.post("/predict", files={"file": ("x.png", b"nope", "image/png")})
        after = client.get("/stats").json()
        assert (after["requests"], after["forwards"]) == (before["requests"], before["forwards"])


@pytest.mark.slow
def test_200_concurrent_requests_are_answered_correctly_and_batched(image_model, image_server) -> None:  # noqa: ANN001
    _, clf, files = image_model
    expected = clf.predict([str(p) for p in files])
    uploads = [(p.name, p.read_bytes()) for p in files]

    async def go() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=image_server.url, timeout=120, limits=limits) as client:
            before = (await client.get("/stats")).json()
            sem = asyncio.Semaphore(64)

            async def one(i: int) -> httpx.Response:
                name, data = uploads[i % len(uploads)]
                async with sem:
                    return await client.post("/predict", files={"file": (name, data, "image/png")})

            responses = await asyncio.gather(*(one(i) for i in range(200)))
            after = (await client.get("/stats")).json()
            responses.append(httpx.Response(200, json={"before": before, "after": after}))
            return responses

    *responses, stats = asyncio.run(go())
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["label"] == expected[i % len(files)], i
    before, after = stats.json()["before"], stats.json()["after"]
    forwards = after["forwards"] - before["forwards"]
    assert after["requests"] - before["requests"] == 200
    assert forwards < 200 and after["max_batch_seen"] > 1, after  # several requests shared a forward pass
    assert after["max_batch_seen"] <= 32


def _export_onnx(folder: Path, clf: TransferClassifier, out: Path) -> Path:
    """The fixture exporter: the whole model (images in, logits out) with torch.onnx.export, and export.json."""
    import torch

    model = clf.model_.eval()
    out.mkdir()
    x = torch.zeros(2, 3, model.image_size, model.image_size)
    torch.onnx.export(model, (x,), str(out / "model.onnx"), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    meta = {"classes": clf.classes_, "preprocessing": model.preprocessing.to_dict(), "image_size": model.image_size,
            "output": "logits"}
    (out / "export.json").write_text(json.dumps(meta))
    return out


@pytest.mark.slow
def test_an_exported_folder_is_served_by_onnx_runtime_with_the_same_predictions(image_model, tmp_path) -> None:  # noqa: ANN001
    folder, clf, files = image_model
    export = _export_onnx(folder, clf, tmp_path / "export")
    expected = clf.predict_proba([str(p) for p in files])
    with local_server(export, "--top-k", "10") as server, httpx.Client(base_url=server.url, timeout=60) as client:
        meta = client.get("/metadata").json()
        assert meta["engine"] == "onnxruntime" and meta["classes"] == clf.classes_
        assert meta["model_sha256"] == hashlib.sha256((export / "model.onnx").read_bytes()).hexdigest()
        r = client.post("/predict", files=_files(files))
        assert r.status_code == 200, r.text
        _check_predictions(r.json(), [p.name for p in files], expected, clf.classes_, 10)
        _assert_error(client.post("/predict", files={"file": ("t.txt", b"hello", "text/plain")}), 415)


def test_serve_command_refuses_a_folder_without_a_model_and_bad_limits(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from tests.cli_helpers import assert_user_error, main_in_process

    assert_user_error(main_in_process(capsys, "serve", str(tmp_path)), "holds no model", "model.json", "model.onnx")
    assert_user_error(main_in_process(capsys, "serve", str(tmp_path / "nothing")), "is not a folder")
    assert_user_error(main_in_process(capsys, "serve", str(tmp_path), "--max-request-mb", "0"), "--max-request-mb")
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    (tmp_path / "export.json").write_text('{"classes": ["a", "b"], "preprocessing": {"modality": "image"}}')
    assert_user_error(main_in_process(capsys, "serve", str(tmp_path)), "gives no image size")
    (tmp_path / "export.json").write_text('{"classes": ["a", "b"], "preprocessing": {"modality": "text"}}')
    assert_user_error(main_in_process(capsys, "serve", str(tmp_path)), "ONNX Runtime cannot load")


def test_serve_binds_127_0_0_1_by_default() -> None:
    from transferkit.cli import _parser

    args = _parser().parse_args(["serve", "runs/x"])
    assert (args.host, args.port, args.max_batch, args.no_batching) == ("127.0.0.1", 8000, 32, False)


def test_an_unexpected_failure_is_a_500_without_internals_in_the_body(caplog) -> None:  # noqa: ANN001
    """A predictor that crashes (a bug, not a bad request): the client gets one sentence, the log gets the error."""
    from fastapi.testclient import TestClient

    from transferkit.data.preprocessing import Preprocessing
    from transferkit.serving import Predictor, ServeSettings, create_app

    class Crashing(Predictor):
        def predict_proba(self, inputs: list) -> np.ndarray:
            raise RuntimeError("secret internal detail")

    predictor = Crashing(source=Path("."), classes=["a", "b"], preprocessing=Preprocessing("text"), image_size=None,
                         sha256="0" * 64, engine="test")
    with TestClient(create_app(predictor, ServeSettings(max_wait_ms=0)), raise_server_exceptions=False) as client:
        r = client.post("/predict", json={"text": "hello"})
        assert r.status_code == 500
        assert list(r.json()) == ["error"] and "secret" not in r.text and "Traceback" not in r.text
        assert client.post("/predict", json={"texts": [3]}).status_code == 422  # and it still answers
    assert "secret internal detail" in caplog.text
