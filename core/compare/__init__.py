"""Compare versions with evidence: is the new version better, and did anything move that should not have?

- ``evaluation``: automatic evaluation (held-out accuracy, reward, KL, length) and what every comparison shares
  (settings, prompt sets, version checks, progress reporting).
- ``sidebyside``: two versions answer the same prompts; the table, its scores and word diffs.
- ``active``: which prompts people should label next (disagreement or reward-model uncertainty).
- ``report``: the "what changed" report after every training job.
- ``safety``: the red-team evaluation and the refusal phrases.
- ``arena``: blind battles and the Bradley-Terry leaderboard.

Scoring on the shared model (log-probs, pair generation) is core.serving.scoring; the reward-model scorer is
core.training.reward.RewardScorer, so judging (below compare) can use both.
"""
