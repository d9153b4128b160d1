"""Bundle loading: every way a bundle can be broken gives one BundleError naming the file at fault."""

from __future__ import annotations

import json

import pytest

from engine.bundle import read_bundle, write_manifest
from engine.errors import BundleError
from engine.pipelines.inpaint import InpaintPipeline


def _rehash(bundle_dir):
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    write_manifest(bundle_dir, manifest)


def test_good_bundle_loads_and_describes_itself(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    info = bundle.describe()
    assert info["kind"] == "sd-inpaint" and info["precision"] == "fp32"
    assert len(bundle.bundle_id) == 64
    assert set(bundle.manifest["files"]) >= {
        "unet/model.onnx",
        "text_encoder/model.onnx",
        "vae_encoder/model.onnx",
        "vae_decoder/model.onnx",
        "tokenizer/tokenizer.json",
    }
    assert bundle.manifest["parity"]["unet"]["max_abs_error"] < 1e-3


def test_missing_file_is_named(bundle_copy):
    (bundle_copy / "unet" / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"unet/model\.onnx: missing from the bundle"):
        read_bundle(bundle_copy)


def test_hash_mismatch_is_named(bundle_copy):
    with open(bundle_copy / "vae_decoder" / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"vae_decoder/model\.onnx: sha256 mismatch"):
        read_bundle(bundle_copy)


def test_corrupt_onnx_is_named(bundle_copy):
    (bundle_copy / "text_encoder" / "model.onnx").write_bytes(b"this is not a protobuf" * 10)
    _rehash(bundle_copy)  # hashes agree, the content is still garbage
    with pytest.raises(BundleError, match=r"text_encoder/model\.onnx: onnxruntime cannot load"):
        InpaintPipeline.from_bundle(bundle_copy)


def test_text_to_image_unet_is_refused_by_name(bundle_copy, tmp_path):
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    ).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    with torch.no_grad():
        torch.onnx.export(
            Wrapper(),
            (torch.randn(2, 4, 8, 8), torch.tensor(10.0), torch.randn(2, 77, 32)),
            str(bundle_copy / "unet" / "model.onnx"),
            input_names=["sample", "timestep", "encoder_hidden_states"],
            output_names=["out_sample"],
            dynamic_axes={"sample": {0: "b", 2: "h", 3: "w"}, "encoder_hidden_states": {0: "b"}},
            opset_version=17,
            dynamo=False,
        )
    _rehash(bundle_copy)
    with pytest.raises(BundleError, match=r"unet/model\.onnx: a text-to-image U-Net; an inpainting bundle needs the 9-channel"):
        InpaintPipeline.from_bundle(bundle_copy)


def test_swapped_parts_are_refused(bundle_copy):
    vae_encoder = (bundle_copy / "vae_encoder" / "model.onnx").read_bytes()
    (bundle_copy / "vae_decoder" / "model.onnx").write_bytes(vae_encoder)
    _rehash(bundle_copy)
    with pytest.raises(BundleError, match=r"vae_decoder/model\.onnx: the vae decoder has no input 'latent_sample'"):
        InpaintPipeline.from_bundle(bundle_copy)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m.pop("files"), r"bundle\.json: lacks the key\(s\) files"),
        (lambda m: m.update(format_version=99), r"format_version 99 is newer"),
        (lambda m: m.update(kind="sd-text2img"), r"kind 'sd-text2img' is not one of"),
        (lambda m: m["files"].pop("tokenizer/tokenizer.json"), r"does not list tokenizer/tokenizer\.json"),
        (lambda m: m["files"].update({"../../etc/passwd": "0" * 64}), r"points outside the bundle"),
    ],
)
def test_bad_manifest_is_named(bundle_copy, edit, message):
    manifest_path = bundle_copy / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    edit(manifest)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        read_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match=r"bundle\.json: missing: this folder is not a PolypForge model bundle"):
        read_bundle(tmp_path)
    (tmp_path / "bundle.json").write_text("{ not json")
    with pytest.raises(BundleError, match=r"bundle\.json: not valid JSON"):
        read_bundle(tmp_path)
    with pytest.raises(BundleError, match="no such folder"):
        read_bundle(tmp_path / "nowhere")


def test_hash_cache_notices_a_rewrite(bundle_copy):
    read_bundle(bundle_copy)  # fills the cache
    target = bundle_copy / "unet" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        read_bundle(bundle_copy)


def test_embedded_demo_bundle_verifies():
    from conftest import REPO_ROOT

    bundle = read_bundle(REPO_ROOT / "exported_models" / "demo-sd-inpaint")
    assert bundle.name == "demo-sd-inpaint"
    assert "random" in bundle.manifest["description"].lower()
