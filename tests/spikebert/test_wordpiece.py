"""spikebert.wordpiece: the tokenizer trained for offline teachers."""

from __future__ import annotations

import pytest

from spikebert.wordpiece import SPECIAL_TOKENS, train_wordpiece, unknown_rate

TEXTS = ["这家外卖很好吃，送餐也很快。", "味道不错，下次还点。", "送餐太慢了，菜都凉了。",
         "delivery was late but the food was good", "好吃 good food 30 minutes"] * 3


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(TEXTS, vocab_size=300, min_frequency=1)


def test_chinese_is_one_token_per_character(tokenizer):
    assert tokenizer.tokenize("很好吃") == ["很", "好", "吃"]
    assert unknown_rate(tokenizer, TEXTS) == 0.0


def test_bert_template_and_token_types(tokenizer):
    enc = tokenizer("好吃", "不错")
    ids = enc["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids.count(tokenizer.sep_token_id) == 2
    assert enc["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(5)] == list(SPECIAL_TOKENS)


def test_unseen_characters_become_unknown():
    tok = train_wordpiece(["好好好", "吃"], vocab_size=100, min_frequency=2)
    assert tok.tokenize("好吃喝") == ["好", "吃", "[UNK]"]
    assert unknown_rate(tok, ["好吃喝"]) == pytest.approx(1 / 3)


def test_round_trip_through_auto_tokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("送餐太慢了", "good")["input_ids"] == tokenizer("送餐太慢了", "good")["input_ids"]
    assert loaded.mask_token_id == tokenizer.mask_token_id == 4


@pytest.mark.parametrize("kwargs, match", [({"vocab_size": 5}, "vocab_size"),
                                           ({"min_frequency": 0}, "min_frequency")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_wordpiece(TEXTS, **kwargs)


def test_bad_texts():
    with pytest.raises(ValueError, match="no texts"):
        train_wordpiece([])
    with pytest.raises(TypeError, match="strings"):
        train_wordpiece([1, 2])
