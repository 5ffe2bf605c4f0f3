# lme4 fits with precision weights (weights = w) for tests/test_weights.py.
# Run from tests/reference: Rscript make_weighted.R  (lme4 1.1.31, R 4.2.2 here).
#
# sleepstudy_w_*: data.csv and spec.json copied from the shared reference set
#   (w: set.seed(20251110); w <- round(runif(180, 0.5, 2), 4), in sleepstudy's row order).
# penicillin_w_*: penicillin_reml's data.csv and split plus a column w:
#   set.seed(20261127); w <- round(runif(144, 0.25, 4), 4), in row_id order.
# Each case's lme4.json: the fit on the train rows,
#   lmer(formula, data = train, weights = w, REML = reml,
#        control = lmerControl(optimizer = "bobyqa")).
library(lme4)
library(jsonlite)

make_penicillin <- function(name, reml) {
  dir.create(name, showWarnings = FALSE)
  d <- read.csv("penicillin_reml/data.csv", colClasses = c(plate = "character", sample = "character"))
  set.seed(20261127)
  d$w <- round(runif(nrow(d), 0.25, 4), 4)
  write.csv(d, file.path(name, "data.csv"), row.names = FALSE)
  spec <- fromJSON("penicillin_reml/spec.json", simplifyVector = FALSE)
  spec$name <- name
  spec$reml <- reml
  spec$description <- paste0("Crossed random intercepts (plate x sample) with precision weights w ~ uniform(0.25, 4), ",
                             if (reml) "REML." else "ML.")
  spec$weights <- list(column = "w", type = "precision",
                       definition = "residual variance of row i is sigma^2 / w_i (lme4's weights=)")
  spec$notes <- "w: set.seed(20261127); w <- round(runif(144, 0.25, 4), 4), in row_id order."
  write_json(spec, file.path(name, "spec.json"), auto_unbox = TRUE, digits = NA)
}
make_penicillin("penicillin_w_reml", TRUE)
make_penicillin("penicillin_w_ml", FALSE)

fit_case <- function(name) {
  spec <- fromJSON(file.path(name, "spec.json"), simplifyVector = FALSE)
  groups <- unlist(spec$group_columns)
  classes <- setNames(rep("character", length(groups)), groups)
  d <- read.csv(file.path(name, "data.csv"), colClasses = classes, check.names = FALSE)
  for (g in groups) d[[g]] <- factor(d[[g]])
  train <- d[d$split == "train", ]
  test <- d[d$split == "test", ]
  m <- lmer(as.formula(spec$formula), data = train, weights = w, REML = spec$reml,
            control = lmerControl(optimizer = "bobyqa"))
  vc <- VarCorr(m)
  terms <- lapply(names(vc), function(g) {
    s <- vc[[g]]
    list(group = g, columns = colnames(s), cov = unname(as.matrix(s)))
  })
  re <- ranef(m, condVar = TRUE)
  ranefs <- lapply(names(re), function(g) {
    r <- re[[g]]
    pv <- attr(r, "postVar")
    list(group = g, columns = colnames(r), levels = rownames(r),
         values = unname(as.matrix(r)),
         condvar = lapply(seq_len(nrow(r)), function(i) unname(pv[, , i, drop = TRUE])))
  })
  out <- list(
    case = name, lme4_version = as.character(packageVersion("lme4")),
    formula = spec$formula, reml = spec$reml,
    fixef = list(names = names(fixef(m)), values = unname(fixef(m))),
    se_fixef = unname(sqrt(diag(as.matrix(vcov(m))))),
    vcov_fixef = unname(as.matrix(vcov(m))),
    random_terms = terms, sigma2 = sigma(m)^2, theta = unname(getME(m, "theta")),
    logLik = as.numeric(logLik(m)), logLik_df = attr(logLik(m), "df"),
    objective = if (spec$reml) REMLcrit(m) else deviance(m),
    scaled_residuals = unname(quantile(residuals(m, type = "pearson", scaled = TRUE))),
    AIC = AIC(m), BIC = BIC(m), n_obs = nobs(m), isSingular = isSingular(m),
    weights = list(sum = sum(train$w), min = min(train$w), max = max(train$w),
                   sum_log = sum(log(train$w))),
    ranef = ranefs,
    fitted = list(row_id = train$row_id, values = unname(fitted(m))),
    predictions = list(
      row_id = test$row_id,
      conditional = unname(predict(m, newdata = test, allow.new.levels = TRUE)),
      population = unname(predict(m, newdata = test, re.form = NA))
    )
  )
  write_json(out, file.path(name, "lme4.json"), auto_unbox = TRUE, digits = NA)
}
for (name in c("sleepstudy_w_reml", "sleepstudy_w_ml", "penicillin_w_reml", "penicillin_w_ml")) {
  fit_case(name)
}
