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
# ratio.csv (issue 19, case 1): rng = default_rng(1); n = 200; a = rng.integers(0, 8, n),
#   b = rng.integers(0, 15, n); x = rng.normal(size=(n, 1)); ua, ub, e = rng.normal(size=8),
#   rng.normal(size=15), rng.normal(size=n); y = 1e5 * ua[a] + ub[b] + e.
r <- read.csv("ratio.csv"); r$a <- factor(r$a); r$b <- factor(r$b)
ratio_crossed <- lmer(y ~ x + (1 | a) + (1 | b), r)  # lme4's default optimizer
ratio_one <- lmer(y ~ x + (1 | a), r)
# offset.csv (case 2): rng = default_rng(2); a in 0..4, b in 0..19 (200 rows);
#   y = 1e6 + 3 u_a[a] + u_b[b] + 0.1 e.
o <- read.csv("offset.csv"); o$a <- factor(o$a); o$b <- factor(o$b)
offset <- lmer(y ~ 0 + (1 | a) + (1 | b), o, REML = FALSE)
# local.csv (case 3): a = 2 groups of 135 rows and 42 singletons, b with 6 levels, x0, x1 ~ N(5, 1):
#   rng = default_rng(3); a = r_[zeros(135), ones(135), arange(2, 44)]; b = rng.integers(0, 6, n);
#   X = rng.normal(5, 1, size=(n, 2)); ua = rng.normal(size=(44, 3)) * [1, 0.3, 0.3];
#   y = 1 + X @ [0.5, -0.5] + ua[a, 0] + ua[a, 1] x0 + ua[a, 2] x1 + 0.5 rng.normal(size=6)[b]
#       + rng.normal(size=n).
l <- read.csv("local.csv"); l$a <- factor(l$a); l$b <- factor(l$b)
local_diag <- lmer(y ~ x0 + x1 + (1 + x0 + x1 || a) + (1 | b), l, REML = FALSE,
                   control = lmerControl(optimizer = "bobyqa"))
local_unstr <- lmer(y ~ x0 + x1 + (1 + x0 + x1 | a), l, REML = FALSE,
                    control = lmerControl(optimizer = "bobyqa"))
# local_diag.csv (seed 5) and local_unstructured.csv (seed 17): the same layout with y drawn by
#   rng = default_rng(seed); b = rng.integers(0, 6, n); X = rng.normal(5, 1, size=(n, 2));
#   sc = rng.choice([0.1, 0.5, 1, 2], size=3); ua = rng.normal(size=(44, 3)) * sc;
#   y = X @ [0.5, -0.5] + ua[a, 0] + ua[a, 1] x0 + ua[a, 2] x1
#       + rng.choice([0, 0.5]) rng.normal(size=6)[b] + rng.normal(size=n).
#   sklmm's first optimum from its usual starts was a local one on the boundary.
ld <- read.csv("local_diag.csv"); ld$a <- factor(ld$a); ld$b <- factor(ld$b)
lu <- read.csv("local_unstructured.csv"); lu$a <- factor(lu$a)
local2_diag <- lmer(y ~ x0 + x1 + (1 + x0 + x1 || a) + (1 | b), ld, REML = FALSE)
local2_unstr <- lmer(y ~ x0 + x1 + (1 + x0 + x1 | a), lu, REML = FALSE)
out <- list(
  local2_diag_ml = as.numeric(logLik(local2_diag)),
  local2_unstructured_ml = as.numeric(logLik(local2_unstr)),
  ratio_crossed_reml = as.numeric(logLik(ratio_crossed)),
  ratio_one_reml = as.numeric(logLik(ratio_one)),
  offset_ml = as.numeric(logLik(offset)),
  local_diag_ml = as.numeric(logLik(local_diag)),
  local_unstructured_ml = as.numeric(logLik(local_unstr)),
  no_fixed_reml = as.numeric(logLik(no_fixed)),
  no_fixed_ml = as.numeric(logLik(no_fixed_ml)),
  slope_reml = as.numeric(logLik(slope)),
  slope_reml_df_resid = nobs(slope) - length(fixef(slope)),
  lme4_version = as.character(packageVersion("lme4"))
)
write_json(out, "lme4.json", auto_unbox = TRUE, digits = NA, pretty = TRUE)
