"""Local stand-ins for what Ray's Hugging Face getting-started example downloads (nothing here touches a network).

- ``load_dataset("yelp_review_full")``: 200 made-up reviews of 5 star ratings, as a ``datasets.DatasetDict``.
- ``AutoTokenizer.from_pretrained("bert-base-cased")``: a word-level tokenizer over the reviews' words.
- ``AutoModelForSequenceClassification.from_pretrained("bert-base-cased", num_labels=5)``: a randomly
  initialised BERT with 2 layers of width 32. A local folder (a checkpoint) loads with transformers itself.
- ``evaluate.load("accuracy")``: the fraction of predictions equal to the references.
"""

import os
import random

WORDS = ["great", "good", "fine", "poor", "awful", "food", "service", "place", "staff", "again", "never",
         "always", "the", "was", "and", "very", "not", "really", "love", "hate"]


def load_dataset(name):
    from datasets import Dataset, DatasetDict

    assert name == "yelp_review_full", name
    rng = random.Random(0)

    def split(n):
        labels = [rng.randrange(5) for _ in range(n)]
        # the rating's word leads each review, so there is something to learn
        texts = [" ".join([WORDS[4 - y]] + rng.choices(WORDS, k=rng.randint(4, 12))) for y in labels]
        return Dataset.from_dict({"label": labels, "text": texts})

    return DatasetDict({"train": split(200), "test": split(100)})


class AutoTokenizer:
    @staticmethod
    def from_pretrained(name, **kwargs):
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        assert name == "bert-base-cased", name
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                       cls_token="[CLS]", sep_token="[SEP]", model_max_length=16)


class AutoModelForSequenceClassification:
    @staticmethod
    def from_pretrained(name, **kwargs):
        import transformers

        if os.path.isdir(name):
            return transformers.AutoModelForSequenceClassification.from_pretrained(name, **kwargs)
        assert name == "bert-base-cased", name
        config = transformers.BertConfig(vocab_size=len(WORDS) + 4, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=16,
                                         **kwargs)
        return transformers.BertForSequenceClassification(config)


class _Accuracy:
    def compute(self, predictions, references):
        return {"accuracy": float(sum(int(p == r) for p, r in zip(predictions, references)) / len(references))}


def load(name):
    assert name == "accuracy", name
    return _Accuracy()
