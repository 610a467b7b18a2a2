"""TF-IDF + logistic regression on a classification config's own splits: the classic baseline a
fine-tuned encoder is measured against (on BBC News the literature reports 0.977 in 5-fold CV).

  python benchmarks/tfidf_baseline.py --config=configs/bbc_news.py            # its test split
  python benchmarks/tfidf_baseline.py --config=configs/bbc_news.py --folds=5  # its sweep's 5 folds

The examples are exactly those llmjax trains and tests on: `llmjax.data.build(config)` (with
`data.folds` = K and `data.fold` = 0..K-1 for cross-validation, the folds of `llmjax.sweep` over
the config). scikit-learn's `TfidfVectorizer` (its defaults: lowercased word unigrams, l2-normalised)
and `LogisticRegression` (its defaults, 1,000 iterations at most) fit the train split, and the test
split is scored by accuracy and macro-F1, as llmjax's classification task scores it. The validation
split is not used: nothing is tuned. Prints one row per fold and the mean; `--out` writes JSON.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # Run as a script from anywhere, without installing llmjax.
  sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'benchmarks'))

import side_by_side  # noqa: E402
from llmjax import data as data_lib  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--config', default='configs/bbc_news.py', help='a classification config[:args]')
  p.add_argument('--folds', type=int, default=0, help='K-fold cross-validation (0 = its splits)')
  p.add_argument('--out', default='', help='also write the figures as JSON to this file')
  return p.parse_args(argv)


def score(train, test) -> dict[str, float]:
  """Accuracy and macro-F1 on `test` of TF-IDF + logistic regression fitted on `train`, both
  sequences of ((text, ...), label)."""
  from sklearn import feature_extraction, linear_model, metrics  # pylint: disable=g-import-not-at-top
  text = lambda examples: [' '.join(texts) for texts, _ in examples]
  labels = lambda examples: np.array([label for _, label in examples])
  vectorizer = feature_extraction.text.TfidfVectorizer()
  classifier = linear_model.LogisticRegression(max_iter=1000)
  classifier.fit(vectorizer.fit_transform(text(train)), labels(train))
  predicted = classifier.predict(vectorizer.transform(text(test)))
  return {'accuracy': float(metrics.accuracy_score(labels(test), predicted)),
          'f1_macro': float(metrics.f1_score(labels(test), predicted, average='macro')),
          'train': len(train), 'test': len(test)}


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = side_by_side.load_config(args.config)
  rows = []
  for fold in range(max(args.folds, 1)):
    if args.folds:
      config.data.update(folds=args.folds, fold=fold)
    data = data_lib.build(config)
    rows.append({'fold': fold if args.folds else None,
                 'validation': len(data.examples('validation')),
                 **score(data.examples('train'), data.examples('test'))})
  print(f'{"fold":>4} | {"train":>6} | {"test":>5} | {"accuracy":>8} | {"macro-F1":>8}')
  for r in rows:
    print(f'{"-" if r["fold"] is None else r["fold"]:>4} | {r["train"]:>6} | {r["test"]:>5} | '
          f'{r["accuracy"]:>8.4f} | {r["f1_macro"]:>8.4f}')
  figures = {'config': args.config, 'folds': args.folds, 'runs': rows,
             'accuracy': float(np.mean([r['accuracy'] for r in rows])),
             'f1_macro': float(np.mean([r['f1_macro'] for r in rows]))}
  print(f'mean | {"":>6} | {"":>5} | {figures["accuracy"]:>8.4f} | {figures["f1_macro"]:>8.4f}')
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(figures, indent=2))
  return figures


if __name__ == '__main__':
  side_by_side.run(main)
