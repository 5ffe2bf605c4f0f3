# lmerTest type III F tests (anova(fit, type = 3)) of hierarchical formulas with factor x
# factor, factor x covariate and three-way interactions, and of a non-hierarchical one, for
# tests/test_ddf.py. Run in this folder: Rscript type3.R (writes type3.csv, type3.json).
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
set.seed(11)
n <- 240
d <- data.frame(A = sample(c("a1","a2","a3"), n, TRUE), B = sample(c("b1","b2"), n, TRUE,
                prob = c(0.3, 0.7)), x = round(rnorm(n), 3), z = round(runif(n), 3),
                g = sample(paste0("g", 1:20), n, TRUE))
d$y <- round(1 + (d$A == "a2") + 0.5 * d$x * (d$B == "b2") + 0.3 * d$z + rnorm(20)[as.integer(factor(d$g))] + rnorm(n), 4)
write.csv(d, "type3.csv", row.names = FALSE)
out <- list()
for (f in c("y ~ A * B + (1 | g)", "y ~ A * x + B + (1 | g)", "y ~ A * B * x + (1 | g)", "y ~ x * z + A + (1 | g)", "y ~ A + A:B + (1 | g)")) {
  fit <- lmer(as.formula(f), d)
  a <- anova(fit, type = 3)
  out[[f]] <- list(terms = rownames(a), F = a[["F value"]], den = a[["DenDF"]], num = a[["NumDF"]])
}
writeLines(toJSON(out, digits = NA), "type3.json")
