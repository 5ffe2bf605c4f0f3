# The "Random effects:" block lme4 prints in summary(), for tests/test_inference.py.
# Run from this folder: Rscript make.R  (writes lme4_print.json).
# zero_variance.csv: y = 1 + 2 x + N(0, 1), 10 groups with no group effect, drawn with
# numpy.random.default_rng(3): n = 200, g = rng.integers(0, 10, n), x = rng.normal(size=n),
# y = 1 + 2 * x + rng.normal(size=n).
library(lme4)
library(jsonlite)
block <- function(m) {
  out <- capture.output(print(summary(m)))
  start <- grep("^Random effects:", out)
  end <- grep("^Number of obs:", out)
  sub("[[:space:]]+$", "", out[start:end])
}
# A tight optimizer: lme4's default stops 1e-12 above the optimum in the REML criterion,
# which moves the fifth digit of the intercept variance (612.10 against 612.09).
tight <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12))
sleep <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, control = tight)
zero_data <- read.csv("zero_variance.csv")
zero_data$g <- factor(zero_data$g)
zero <- lmer(y ~ x + (1 + x | g), zero_data)
# R's format(x, digits = 4), which formatVC uses for the variances and standard deviations.
vectors <- list(
  c(612.0899, 35.07166, 654.941), c(24.74045, 5.922133, 25.59182), c(0, 1.879e-18, 0.9857),
  c(0, 0, 0.9857112), c(1e5, 2.5, 3e-3), c(-1.5, 22.25, 0.001234), c(123456789, 1.5),
  c(9.99996, 0.1), c(1e-120, 1), c(0.5, 0.25), c(1, 2, 3), c(99999, 10), c(0.00012, 123.4)
)
formats <- lapply(vectors, function(v) list(values = v, formatted = format(v, digits = 4)))
# format.pval(p, digits = 3), as printCoefmat prints p-values (eps = .Machine$double.eps)
pvalue_vectors <- list(c(0.5, 1.27e-11), c(0.5, 0.0123), c(1e-20, 0.049), c(0.2, 0.31))
pvalues <- lapply(pvalue_vectors, function(p) list(values = p, formatted = format.pval(p, digits = 3)))
out <- list(
  format = formats,
  pvalues = pvalues,
  sleepstudy = list(formula = "Reaction ~ Days + (Days | Subject)", lines = block(sleep),
                    reml_criterion = REMLcrit(sleep)),
  zero_variance = list(formula = "y ~ x + (1 + x | g)", lines = block(zero),
                       reml_criterion = REMLcrit(zero), singular = isSingular(zero)),
  lme4_version = as.character(packageVersion("lme4"))
)
write_json(out, "lme4_print.json", auto_unbox = TRUE, digits = NA, pretty = TRUE)
