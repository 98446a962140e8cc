"""Tables and figures from run records: mean ± 95% CI over seeds, the papers' numbers beside ours.

python -m l2rw.report +table=NAME [scale=cpu|full] [source=local|wandb]     one table
python -m l2rw.report all                                                  every table config

Data flows one way: spec (the table's composed config) -> records (local result.json files or
W&B runs) -> frame (one row per record) -> aggregate (cells, problems) -> outputs (md, csv, tex,
png). The report layer reads records only; it never imports training code beyond the config.
"""
