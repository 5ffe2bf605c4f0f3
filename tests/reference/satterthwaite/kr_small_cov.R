# pbkrtest's Kenward-Roger tables for two fits whose intercept-slope covariance is (near)
# 0: kr_zero_cov.csv (mirrored groups: exactly 0) and kr_small_cov.csv (the same with
# noise of sd 1e-3 added to y). Run in this folder: Rscript kr_small_cov.R
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest); library(jsonlite)})
out <- list()
for (name in c("kr_zero_cov", "kr_small_cov")) {
  d <- read.csv(paste0(name, ".csv"))
  d$g <- as.character(d$g)
  fit <- lmer(y ~ x + (x | g), d, control = lmerControl(optimizer = "bobyqa"))
  ck <- summary(fit, ddf = "Kenward-Roger")$coefficients
  out[[name]] <- list(formula = "y ~ x + (x | g)", se = unname(ck[, 2]), df = unname(ck[, 3]),
                      p = unname(ck[, 5]), vcov_adj = unname(as.matrix(vcovAdj(fit))),
                      cov = unname(as.matrix(VarCorr(fit)$g)))
}
writeLines(toJSON(out, digits = NA, pretty = TRUE), "kr_small_cov.json")
