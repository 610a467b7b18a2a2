"""A token-classification config (NER, POS tagging) fine-tuned side by side by llmjax and by
transformers + PyTorch, on the same batches from the same pretrained weights.

  python benchmarks/ner_vs_transformers.py --config=configs/ner_wnut16.py
  python benchmarks/ner_vs_transformers.py --config=configs/ner_wnut16.py:seed=1 \
      --llmjax_workdir=runs/ner1   # reuse a finished llmjax run of the same config

The companion of `finetune_vs_transformers.py` (sequence classification), with its command line,
config loading, evaluation steps and choice of the best checkpoint. The config's data is built once
by llmjax (`llmjax.data.tagging`: each word's tag on its first WordPiece): both sides train on the
batches of `train_iter()` for the config's number of steps, are evaluated on
`eval_iter('validation')` at the same steps, keep the checkpoint with the best validation
`eval.metric` (ties go to the earlier step) and score it on the test split with the same metric code
(`TokenClassificationTask.summarize`: seqeval's entity precision/recall/F1, word accuracy).

transformers side: `BertForTokenClassification.from_pretrained` on the directory the config's
`model.init_from` names (the encoder without its pooler, a fresh classifier of HF's initialisation),
the config's dropout, in training mode; its own loss (mean cross-entropy over the tagged first
pieces; the other positions get label -100); torch's fused AdamW with the config's lr, betas, eps
and weight decay (none on biases and LayerNorm), the same warmup + decay (LambdaLR over
`llmjax.optim.learning_rate`; `side_by_side.torch_adamw`) and `clip_grad_norm_` at the same norm.

Prints both runs' test metrics, their difference and wall times; `--out` writes them as JSON.
"""

import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
for path in (REPO, REPO / 'benchmarks'):  # Run as a script from anywhere, without installing.
  if str(path) not in sys.path:
    sys.path.insert(0, str(path))

import finetune_vs_transformers as finetune  # noqa: E402
import side_by_side  # noqa: E402
from llmjax import assets, models, tasks, train  # noqa: E402


def run_transformers(config, data, task, threads: int) -> dict:
  """Trains and scores the transformers model as the module docstring says."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(config.seed)
  names = data.label_names
  model = transformers.BertForTokenClassification.from_pretrained(
      assets.resolve(config.model.init_from), num_labels=len(names),
      id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
      hidden_dropout_prob=config.model.hidden_dropout,
      attention_probs_dropout_prob=config.model.attention_dropout)
  total = train.total_steps(config, data)
  opt, scheduler = side_by_side.torch_adamw(model, config, total)

  def inputs(batch):
    return {k: torch.as_tensor(batch[k], dtype=torch.long)
            for k in ('input_ids', 'token_type_ids', 'attention_mask')}

  def evaluate(split):
    model.eval()
    outputs = []
    with torch.no_grad():
      for batch in data.eval_iter(split):
        logits = model(**inputs(batch)).logits
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), torch.as_tensor(batch['labels'], dtype=torch.long),
            reduction='none').numpy()
        outputs.append({'loss': float(np.sum(nll * batch['weights'])),
                        'weight': float(batch['weights'].sum()),
                        'prediction': logits.argmax(-1).numpy(), 'label': batch['labels'],
                        'mask': batch['weights']})
    model.train()
    return task.summarize(outputs)

  def step_loss(batch):
    labels = np.where(batch['weights'] > 0, batch['labels'], -100)
    return model(**inputs(batch), labels=torch.as_tensor(labels, dtype=torch.long)).loss

  with side_by_side.torch_threads(threads):
    return finetune.train_torch(model, opt, scheduler, config, data, total, step_loss, evaluate)


def main(argv=None) -> dict:
  args = finetune.parse_args(argv)
  config = side_by_side.load_config(args.config)
  if config.task.name != 'token_classification':
    raise SystemExit(f'{args.config} is a {config.task.name} config: this script compares token '
                     'classification (finetune_vs_transformers.py the sequence tasks)')
  ours = finetune.llmjax_results(config, args.llmjax_workdir)
  data = tasks.build_data(config, process_index=0, process_count=1)
  models.resolve(config)
  theirs = run_transformers(config, data, tasks.task_for(config, data), args.threads)
  return finetune.report(args.config, config, ours, theirs, args.out)


if __name__ == '__main__':
  side_by_side.run(main)
