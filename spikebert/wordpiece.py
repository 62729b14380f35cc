"""Train a BERT WordPiece tokenizer on local text (for teachers built offline).

BERT's normalizer puts spaces around every CJK character, so Chinese text comes out one
token per character (as in ``bert-base-chinese``) while Latin words and digits get
WordPiece sub-words. Built with the Hugging Face ``tokenizers`` library and returned as a
``transformers`` fast tokenizer that ``save_pretrained`` / ``AutoTokenizer`` round-trip.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece(texts: Iterable[str], *, vocab_size: int = 8000, min_frequency: int = 2,
                    lowercase: bool = True, model_max_length: int = 512):
    """A BERT-style tokenizer (``[CLS] a [SEP] b [SEP]`` template) trained on ``texts``.

    Every character of ``texts`` enters the vocabulary; characters never seen become
    ``[UNK]``. ``min_frequency`` is the count a sub-word needs to be merged, and
    ``vocab_size`` caps the vocabulary including the special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, "
                         f"got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be at least 1, got {min_frequency}")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                               special_tokens=list(SPECIAL_TOKENS),
                               continuing_subword_prefix="##")
    seen = 0

    def counted(items: Iterable[str]):
        nonlocal seen
        for text in items:
            if not isinstance(text, str):
                raise TypeError(f"train_wordpiece takes strings, got {type(text).__name__}")
            seen += 1
            yield text

    tokenizer.train_from_iterator(counted(texts), trainer=trainer)
    if seen == 0:
        raise ValueError("train_wordpiece got no texts")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def unknown_rate(tokenizer, texts: Iterable[str]) -> float:
    """Fraction of the tokens of ``texts`` (no special tokens) that are ``[UNK]``."""
    unk, total = tokenizer.unk_token_id, 0
    unknown = 0
    batch: list[str] = []

    def count(items: list[str]) -> None:
        nonlocal unknown, total
        for ids in tokenizer(items, add_special_tokens=False, verbose=False)["input_ids"]:
            total += len(ids)
            unknown += sum(i == unk for i in ids)

    for text in texts:
        batch.append(text)
        if len(batch) == 1000:
            count(batch)
            batch = []
    if batch:
        count(batch)
    return unknown / total if total else 0.0
