"""Backbone families, explicit sources, text diagnostics and prompt ensembles (offline, tiny models)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from embed_helpers import cache_contents, embed, make_image_set
from family_models import SIGLIP_TEXT_TOKENS, save_tiny_dual_encoder, save_tiny_siglip

from tagcons.cache.schema import read_attrs
from tagcons.cli import cli, main
from tagcons.embed.backbones import load_backbone, parse_source
from tagcons.embed.features import text_features, tokenize
from tagcons.embed.scripts import script_shares, unread_script
from tagcons.errors import BadInputError
from tagcons.finetune import FinetuneConfig, run_finetune


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "siglip": save_tiny_siglip(root / "siglip"),
        "dual-encoder": save_tiny_dual_encoder(root / "dual"),
    }


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    return make_image_set(tmp_path_factory.mktemp("set"), n_images=20, tags_per_image=5)


@pytest.mark.parametrize("family", ["siglip", "dual-encoder"])
def test_family_runs_embed_fit_predict_and_a_finetune_epoch(family, checkpoints, image_set, tmp_path):
    pairs, images = image_set
    source = f"local:{checkpoints[family]}"
    assert load_backbone(source).family.name == family
    runner = CliRunner()
    cache = tmp_path / "c.h5"
    common = ["--data", str(pairs)]
    result = runner.invoke(
        cli, ["embed", *common, "--images", str(images), "--backbone", source, "--out", str(cache), "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(read_attrs(cache)["settings"])["family"] == family
    run = tmp_path / "run"
    result = runner.invoke(cli, ["fit-head", "--cache", str(cache), *common, "--head", "logreg", "--out", str(run)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli, ["predict", "--run", str(run), "--cache", str(cache), *common, "--out", str(tmp_path / "pred.csv")]
    )
    assert result.exit_code == 0, result.output
    ft = run_finetune(
        FinetuneConfig(
            data=str(pairs),
            images=str(images),
            backbone=source,
            out=str(tmp_path / "ft"),
            epochs=1,
            batch_size=8,
            workers=0,
            test_size=0.3,
            val_size=0.2,
        )
    )
    assert (ft.run_dir / "metrics.json").is_file() and (ft.backbone_dir / "config.json").is_file()
    assert load_backbone(f"local:{ft.backbone_dir}").family.name == family


def test_siglip_texts_are_padded_to_the_models_fixed_length(checkpoints):
    backbone = load_backbone(f"local:{checkpoints['siglip']}")
    texts = ["#맛집", "#cafe tour"]
    tokens = backbone.tokenize(texts)
    assert tokens["input_ids"].shape == (2, SIGLIP_TEXT_TOKENS)
    longest = tokenize(backbone.tokenizer, texts, backbone.max_text_tokens, "longest")
    assert longest["input_ids"].shape[1] < SIGLIP_TEXT_TOKENS
    with torch.no_grad():
        fixed = text_features(backbone.model, **tokens)[0]
        shortest = text_features(backbone.model, **longest)[0]
    # The rule matters: SigLIP pools the last position, so padding to the batch changes the features.
    assert not torch.allclose(fixed, shortest, atol=1e-3)
    with torch.no_grad():  # and with max-length padding a text's features do not depend on its batch
        alone = text_features(backbone.model, **backbone.tokenize(texts[:1]))[0]
    torch.testing.assert_close(alone, fixed, atol=2e-6, rtol=0)


def test_truncated_hashtags_are_counted(tmp_path, checkpoints, caplog):
    pairs, images = make_image_set(tmp_path, n_images=3, tags_per_image=2)
    long_tag = "#" + "아주긴해시태그" * 8
    with open(pairs, "a", encoding="utf-8") as f:
        f.write(f"cat_00.png,{long_tag},3\ncat_01.png,{long_tag} 두번째,2\n")
    with caplog.at_level(logging.WARNING):
        summary = embed(pairs, images, tmp_path / "c.h5", backbone=f"local:{checkpoints['siglip']}")
    assert summary.texts_truncated == 2
    assert read_attrs(tmp_path / "c.h5")["texts_truncated"] == 2
    assert "cut" in caplog.text and "아주긴해시태그" in caplog.text
    assert long_tag + " 두번째" not in caplog.text and "... (61 characters)" in caplog.text  # quoted short
    again = embed(pairs, images, tmp_path / "c.h5", backbone=f"local:{checkpoints['siglip']}")
    assert again.texts_truncated == 0 and read_attrs(tmp_path / "c.h5")["texts_truncated"] == 2


def test_script_warning_fires_for_an_english_only_backbone_on_hangul():
    hangul = ["#맛집", "#여행스타그램", "#카페", "#ootd"]
    assert script_shares(hangul)["Hangul"] == 0.75
    assert unread_script(("en",), hangul) == ("Hangul", 0.75)
    assert unread_script(("multilingual",), hangul) is None
    assert unread_script(("ko",), hangul) is None
    assert unread_script(None, hangul) is None  # unknown checkpoints: no language claim, no warning
    assert unread_script(("en",), ["#food", "#travel", "#맛집"]) is None


def test_embed_warns_once_with_the_share_and_a_suggestion(tmp_path, caplog, monkeypatch):
    from tagcons.embed import backbones

    pairs, images = make_image_set(tmp_path, n_images=2, tags_per_image=4)
    spec = backbones.BACKBONES["tiny"]
    monkeypatch.setitem(backbones.BACKBONES, "tiny", backbones.BackboneSpec(**{**spec.__dict__, "languages": ("en",)}))
    with caplog.at_level(logging.WARNING):
        embed(pairs, images, tmp_path / "c.h5")
    warnings = [r.getMessage() for r in caplog.records if "written in Hangul" in r.getMessage()]
    assert len(warnings) == 1 and "koclip" in warnings[0] and "%" in warnings[0]


def test_two_template_cache_is_the_normalised_mean_of_single_template_caches(tmp_path):
    pairs, images = make_image_set(tmp_path, n_images=2, tags_per_image=3)
    templates = ("{}", "{} 사진")
    both = cache_contents(embed(pairs, images, tmp_path / "both.h5", text_templates=templates).cache)
    singles = [
        cache_contents(embed(pairs, images, tmp_path / f"{i}.h5", text_templates=(t,)).cache)
        for i, t in enumerate(templates)
    ]
    for text, row in both["texts"].items():
        unit = [s["texts"][text] / np.linalg.norm(s["texts"][text]) for s in singles]
        np.testing.assert_allclose(row, np.mean(unit, axis=0), atol=2e-6)
    assert json.loads(read_attrs(tmp_path / "both.h5")["text_template"]) == list(templates)


def test_sources_are_explicit_and_an_ambiguous_bare_name_is_refused(tmp_path, monkeypatch, capsys):
    assert parse_source("hf:openai/clip-vit-base-patch32@abc123").revision == "abc123"
    assert parse_source("hf:openai/clip-vit-base-patch32").kind == "hub"
    assert parse_source("clip").kind == "registry"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip").mkdir()
    with pytest.raises(BadInputError, match="both the registry alias"):
        parse_source("clip")
    assert parse_source("local:clip").kind == "local"
    with pytest.raises(BadInputError, match="no such folder"):
        parse_source("local:missing")
    with pytest.raises(BadInputError, match="ORG/NAME"):
        parse_source("hf:noslash")
    for command in (["embed", "--images", ".", "--out", "c.h5"], ["finetune", "--images", ".", "--out", "run"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--data", "x.csv", "--backbone", "clip"])
        assert exit_info.value.code == 2
        assert "local:clip" in capsys.readouterr().err


def test_init_head_from_a_cache_with_other_templates_is_refused(tmp_path):
    from tagcons.evaluate.rundir import write_json
    from tagcons.finetune.probe import check_same_templates

    write_json(tmp_path / "config.json", {"text_template": "{} 사진"})
    with pytest.raises(BadInputError, match="--text-template '{} 사진'"):
        check_same_templates(tmp_path, ("{}",))
    check_same_templates(tmp_path, ("{} 사진",))
    write_json(tmp_path / "config.json", {"text_template": json.dumps(["{}", "{} 사진"], ensure_ascii=False)})
    check_same_templates(tmp_path, ("{}", "{} 사진"))


def test_finetune_text_features_of_an_ensemble_match_the_cache(tmp_path):
    from tagcons.finetune.data import TokenTable
    from tagcons.finetune.model import FinetuneModel

    pairs, images = make_image_set(tmp_path, n_images=2, tags_per_image=3)
    templates = ("{}", "{} 사진")
    cached = cache_contents(embed(pairs, images, tmp_path / "c.h5", text_templates=templates).cache)["texts"]
    backbone = load_backbone("tiny")
    texts = np.array(sorted(cached))
    ids, mask = TokenTable.build(texts, backbone, templates).rows(np.arange(len(texts)))
    assert ids.dim() == 3 and ids.shape[0] == 2
    with torch.no_grad():
        ours = FinetuneModel(backbone.model).text(ids, mask).numpy()
    expected = np.stack([cached[t] / np.linalg.norm(cached[t]) for t in texts])
    np.testing.assert_allclose(ours, expected, atol=2e-6)


def test_naflex_and_unknown_architectures_are_refused_with_the_supported_ones_named():
    from transformers import BertConfig

    Siglip2Config = getattr(pytest.importorskip("transformers"), "Siglip2Config", None)
    if Siglip2Config is None:
        pytest.skip("this transformers has no SigLIP 2 (added in 4.49)")

    from tagcons.embed.families import family_of
    from tagcons.errors import BackboneUnavailableError

    with pytest.raises(BackboneUnavailableError, match="fixed-resolution"):
        family_of(Siglip2Config())
    with pytest.raises(BackboneUnavailableError, match="vision-text-dual-encoder"):
        family_of(BertConfig())
