# Likelihood-ratio test between two nested glmer fits (lme4's anova), cbpp.
# Run from the repository root: Rscript tests/reference/glmm/lrt/lrt.R
library(lme4)
library(jsonlite)
ctl <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12)
m1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial, control = ctl)
m0 <- glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cbpp, binomial, control = ctl)
a <- anova(m0, m1)
out <- list(
  call = "anova(m0, m1): m1 = cbind(incidence, size - incidence) ~ period + (1 | herd), m0 = ~ 1 + (1 | herd), glmerControl(optimizer = 'bobyqa', tolPwrss = 1e-12)",
  R_version = R.version.string, lme4_version = as.character(packageVersion("lme4")),
  logLik = as.numeric(a$logLik), npar = as.numeric(a$npar), Chisq = as.numeric(a$Chisq[2]),
  Df = as.numeric(a$Df[2]), p_value = as.numeric(a[["Pr(>Chisq)"]][2]), AIC = as.numeric(a$AIC)
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/reference/glmm/lrt/lrt.json")
