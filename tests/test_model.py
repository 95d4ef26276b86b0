import pytest
import torch

from catalog.taxonomy import load_taxonomy
from model_training.backbone import BackboneError, build_backbone
from model_training.heads import SpatialAttentionPool
from model_training.model import CategoryModel, value_orders_for


def tiny_model(slug="men_tshirts"):
    torch.manual_seed(0)
    return CategoryModel(build_backbone("convnext-test"), value_orders_for(load_taxonomy()[slug]), head_hidden=16)


def test_forward_gives_logits_per_attribute_in_taxonomy_order():
    model = tiny_model("sarees").eval()
    out = model(torch.randn(2, 3, 64, 64))
    category = load_taxonomy()["sarees"]
    assert list(out) == list(category.attribute_names) == list(model.attribute_names)
    for attribute in category.attributes:
        assert out[attribute.name].shape == (2, len(attribute.values))


def test_spatial_attention_weights_sum_to_one_and_depend_on_location():
    torch.manual_seed(0)
    pool = SpatialAttentionPool(8, hidden=16)
    x = torch.randn(3, 8, 5, 5)
    w = pool.weights(x)
    assert w.shape == (3, 25)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(3))
    assert (w.max(dim=1).values - w.min(dim=1).values > 1e-4).all()
    # the pooled vector is the weighted sum, not the plain mean
    assert not torch.allclose(pool(x), x.mean(dim=(2, 3)))


def test_freeze_backbone_and_reset_heads():
    model = tiny_model()
    model.freeze_backbone()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    model.reset_heads(value_orders_for(load_taxonomy()["kurtis"]))
    out = model(torch.randn(1, 3, 32, 32))
    assert out["color"].shape == (1, 13) and len(out) == 9


def test_backbone_loads_from_local_directory(tmp_path):
    source = build_backbone("convnext-test")
    source.model.save_pretrained(tmp_path / "bb")
    loaded = build_backbone(str(tmp_path / "bb"))
    for (k1, v1), (k2, v2) in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_unknown_backbone_error_lists_named_configs(tmp_path):
    with pytest.raises(BackboneError, match="convnext-atto"):
        build_backbone(str(tmp_path / "nope"))


def test_named_atto_matches_timm_sizes():
    config = build_backbone("convnext-atto").model.config
    assert config.hidden_sizes == [40, 80, 160, 320] and config.depths == [2, 2, 6, 2]


@pytest.mark.gpu
def test_bf16_autocast_forward_on_cuda_matches_fp32_on_cpu():
    """Training runs the model under bf16 autocast on CUDA: its logits must be the fp32 CPU logits, to
    bf16's precision (about 1% of these ~0.5-sized logits on CPU autocast; the bound allows ~6x that)."""
    atol, rtol = 0.03, 0.02
    model = tiny_model("sarees").eval()
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = model.to("cuda")(x.to("cuda"))
    assert list(got) == list(expected)
    for name, logits in expected.items():
        assert got[name].device.type == "cuda" and got[name].dtype == torch.bfloat16, name
        assert logits.abs().max() > 10 * atol, f"{name}: logits too small for the bound to mean anything"
        torch.testing.assert_close(got[name].float().cpu(), logits, atol=atol, rtol=rtol, msg=name)
