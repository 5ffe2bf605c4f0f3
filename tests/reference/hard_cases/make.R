# lme4's log-likelihoods for the hard cases of tests/test_hard_cases.py.
# Run from this folder: Rscript make.R  (writes lme4.json).
# small.csv: numpy.random.default_rng(0); g = repeat(0:9, each 5); x = rng.normal(size=50);
#   y = rng.normal(size=10)[g] + x + rng.normal(size=50).
library(lme4)
library(jsonlite)
d <- read.csv("small.csv")
d$g <- factor(d$g)
no_fixed <- lmer(y ~ 0 + (1 | g), d)                 # an X with no columns, no intercept
no_fixed_ml <- lmer(y ~ 0 + (1 | g), d, REML = FALSE)
slope <- lmer(y ~ x + (x | g), d, control = lmerControl(optimizer = "bobyqa"))
out <- list(
  no_fixed_reml = as.numeric(logLik(no_fixed)),
  no_fixed_ml = as.numeric(logLik(no_fixed_ml)),
  slope_reml = as.numeric(logLik(slope)),
  slope_reml_df_resid = nobs(slope) - length(fixef(slope)),
  lme4_version = as.character(packageVersion("lme4"))
)
write_json(out, "lme4.json", auto_unbox = TRUE, digits = NA, pretty = TRUE)
