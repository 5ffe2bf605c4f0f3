# lmerTest's Satterthwaite tests for sklmm's tests/test_ddf.py. Run in this folder:
#   Rscript make.R     (lme4 1.1.31, lmerTest 3.1.3, nlme, jsonlite)
# Writes <case>.csv (the data) and lmerTest.json: per case the formula, REML, the
# coefficient table of summary(fit, ddf = "Satterthwaite"), the type I and type III
# anova tables with their contrast matrices (lmerTest::show_tests), the joint test that
# each term's columns are zero (contest(fit, L, joint = TRUE)), lme4's profile intervals
# (confint(fit, method = "profile")) and, for REML fits off the boundary, the
# Kenward-Roger tables (summary and anova with ddf = "Kenward-Roger", pbkrtest::vcovAdj).
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest); library(nlme)
                  library(jsonlite)})
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e6))
out <- list()

tables <- function(fit, type, ddf = "Satterthwaite") {
  a <- anova(fit, type = type, ddf = ddf)
  L <- show_tests(a, fractions = FALSE)
  lapply(seq_len(nrow(a)), function(i) list(
    term = rownames(a)[i], sum_sq = a[i, "Sum Sq"], mean_sq = a[i, "Mean Sq"],
    num_df = a[i, "NumDF"], den_df = a[i, "DenDF"], F = a[i, "F value"], p = a[i, "Pr(>F)"],
    L = unname(L[[i]])))
}

case <- function(name, formula, data, reml, factors = list()) {
  fit <- lmer(as.formula(formula), data = data, REML = reml, control = ctrl)
  co <- summary(fit, ddf = "Satterthwaite")$coefficients
  X <- model.matrix(fit)
  assign <- attr(X, "assign")
  labels <- attr(terms(fit), "term.labels")
  columns <- lapply(seq_along(labels), function(k) {
    idx <- which(assign == k)
    L <- diag(ncol(X))[idx, , drop = FALSE]
    ct <- contest(fit, L, joint = TRUE, ddf = "Satterthwaite")
    list(term = labels[k], columns = I(colnames(X)[idx]), column_indices = I(idx - 1L),
         den_df = ct$DenDF, F = ct[["F value"]], num_df = ct$NumDF, p = ct[["Pr(>F)"]])
  })
  ci <- suppressWarnings(confint(fit, method = "profile", level = 0.95, oldNames = FALSE))
  kr <- NULL
  if (reml && !isSingular(fit)) {  # pbkrtest: REML fits; the KR table uses vcovAdj's se
    ck <- summary(fit, ddf = "Kenward-Roger")$coefficients
    kr <- list(
      coef = list(names = I(rownames(ck)), se = I(unname(ck[, 2])), df = I(unname(ck[, 3])),
                  t = I(unname(ck[, 4])), p = I(unname(ck[, 5]))),
      vcov_adj = unname(as.matrix(vcovAdj(fit))),
      anova_type3 = tables(fit, 3, "Kenward-Roger"), anova_type1 = tables(fit, 1, "Kenward-Roger"))
  }
  write.csv(data, paste0(name, ".csv"), row.names = FALSE)
  out[[name]] <<- list(
    formula = formula, reml = reml, factors = factors, logLik = as.numeric(logLik(fit)),
    isSingular = isSingular(fit),
    coef = list(names = I(rownames(co)), estimate = I(unname(co[, 1])), se = I(unname(co[, 2])),
                df = I(unname(co[, 3])), t = I(unname(co[, 4])), p = I(unname(co[, 5]))),
    anova_type1 = tables(fit, 1), anova_type3 = tables(fit, 3), column_tests = columns,
    confint_profile = list(names = I(rownames(ci)), lower = I(unname(ci[, 1])),
                           upper = I(unname(ci[, 2]))),
    kenward_roger = kr)
}

# A factor interaction (R's factor order Male, Female: SexFemale is the column).
o <- as.data.frame(Orthodont)
o$Subject <- as.character(o$Subject)
o$Sex <- factor(as.character(o$Sex), levels = c("Male", "Female"))
case("orthodont_interaction_reml", "distance ~ age * Sex + (age | Subject)", o, TRUE,
     factors = list(Sex = list(levels = c("Male", "Female"), ordered = FALSE)))
case("orthodont_interaction_ml", "distance ~ age * Sex + (1 | Subject)", o, FALSE,
     factors = list(Sex = list(levels = c("Male", "Female"), ordered = FALSE)))

# Nested random effects: Machines, machine within worker.
m <- as.data.frame(Machines)
m$Worker <- as.character(m$Worker); m$Machine <- as.character(m$Machine)
case("machines_nested_reml", "score ~ Machine + (1 | Worker/Machine)", m, TRUE)

# A small unbalanced design with few groups (5 groups of 3 to 12 rows).
set.seed(7)
sizes <- c(3, 5, 8, 12, 6)
g <- rep(paste0("g", 1:5), sizes)
n <- length(g)
x <- round(rnorm(n), 3)
f <- sample(c("a", "b", "c"), n, replace = TRUE)
b <- rnorm(5, sd = 1.5)
y <- round(1 + 0.5 * x + ifelse(f == "b", 0.7, 0) + b[as.integer(factor(g))] + rnorm(n), 4)
u <- data.frame(y = y, x = x, f = f, g = g)
case("unbalanced_reml", "y ~ x + f + (1 | g)", u, TRUE)

# A boundary fit: the between-batch sd is estimated as 0 (profile interval from 0).
d2 <- as.data.frame(Dyestuff2)
d2$Batch <- as.character(d2$Batch)
case("dyestuff2_singular_reml", "Yield ~ 1 + (1 | Batch)", d2, TRUE)

writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "lmerTest.json")
