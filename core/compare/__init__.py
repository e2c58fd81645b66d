"""Compare versions with evidence: is the new version better, and did anything move that should not have?

- ``evaluation``: automatic evaluation (held-out accuracy, reward, KL, length) and what every comparison shares
  (settings, prompt sets, version checks, progress reporting).
- ``sidebyside``: two versions answer the same prompts; the table, its scores and word diffs.
- ``active``: which prompts people should label next (disagreement or reward-model uncertainty).
- ``report``: the "what changed" report after every training job.
- ``safety``: the red-team evaluation and the refusal phrases.
- ``safety_prompts``: the red-team prompt set's file format (its checks and its hash).
- ``arena``: blind battles and the Bradley-Terry leaderboard.
- ``blind``: the blind check by people after a job (vN against its parent, sides randomised, names hidden).
- ``signature``: what the labels prefer in answer features, and whether a version moved that way (sign tests).
- ``verdict``: the report's verdict from all the evidence, Holm-corrected as one family, in plain words.
- ``style``: style control as Chatbot Arena does it (Bradley-Terry with length and markdown covariates).
- ``gate``: the release gate, the evidence turned into pass / fail before a version leaves the studio.
- ``benchmarks``: standard benchmarks per version through lm-evaluation-harness (what alignment costs).
- ``worker``: the background worker that computes reports and safety evaluations after every job.

Scoring on the shared model (log-probs, pair generation) is core.serving.scoring; the reward-model scorer is
core.training.reward.RewardScorer, so judging (below compare) can use both.
"""
