from __future__ import annotations

import pytest

from helpline.retrieval.fusion import reciprocal_rank_fusion, weighted_fusion


def test_rrf_rewards_items_both_lists_rank_high() -> None:
    bm25 = [("a", 9.0), ("b", 5.0), ("c", 1.0)]
    dense = [("b", 0.9), ("d", 0.8), ("a", 0.1)]
    fused = reciprocal_rank_fusion([bm25, dense], k=60)
    assert [i for i, _ in fused][:2] == ["b", "a"]  # b: ranks 2 and 1; a: ranks 1 and 3
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert {i for i, _ in fused} == {"a", "b", "c", "d"}


def test_rrf_ignores_raw_score_scales() -> None:
    small = [("x", 0.002), ("y", 0.001)]
    huge = [("y", 1e6), ("x", 1.0)]
    fused = dict(reciprocal_rank_fusion([small, huge]))
    assert fused["x"] == pytest.approx(fused["y"])


def test_rrf_weights_favour_a_list_and_must_match_count() -> None:
    fused = reciprocal_rank_fusion([[("a", 1.0)], [("b", 1.0)]], weights=[2.0, 1.0])
    assert fused[0][0] == "a"
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[("a", 1.0)]], weights=[1.0, 1.0])


def test_weighted_fusion_normalises_each_list_before_mixing() -> None:
    bm25 = [("a", 30.0), ("b", 10.0)]
    dense = [("b", 0.9), ("a", 0.7)]
    fused = dict(weighted_fusion([bm25, dense], weights=[0.5, 0.5]))
    assert fused["a"] == pytest.approx(0.5) and fused["b"] == pytest.approx(0.5)
    assert weighted_fusion([bm25, dense], weights=[0.2, 0.8])[0][0] == "b"


def test_fusing_empty_lists_gives_nothing() -> None:
    assert reciprocal_rank_fusion([[], []]) == []
    assert weighted_fusion([[], []]) == []
