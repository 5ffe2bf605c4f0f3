# lmerTest's ranova for a diagonal term (sleepstudy, (Days || Subject)) and a factor
# random slope (ranova_factor.csv: sleepstudy with a 3-level factor g3), for
# tests/test_ddf.py. Run in this folder: Rscript ranova.R (writes ranova.json).
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
out <- list()
tab <- function(fit) {
  r <- ranova(fit)
  list(terms = rownames(r), npar = r$npar, logLik = r$logLik, LRT = r$LRT, Df = r$Df,
       p = r[["Pr(>Chisq)"]])
}
out$diagonal <- tab(lmer(Reaction ~ Days + (Days || Subject), sleepstudy))
d <- read.csv("ranova_factor.csv")
d$Subject <- as.character(d$Subject)
out$factor <- tab(lmer(Reaction ~ Days + g3 + (1 + g3 | Subject), d))
writeLines(toJSON(out, digits = NA, pretty = TRUE, na = "null"), "ranova.json")
