# lme4 fits of formulas with factors, contrasts, transforms and missing data, for sklmm's
# formula front end (tests/test_formula_fit.py). Run in this folder:  Rscript make.R
# lme4 1.1.31, nlme, jsonlite; writes <case>.csv and lme4.json.
suppressMessages({library(lme4); library(nlme); library(jsonlite)})
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e6))
out <- list()

case <- function(name, formula, py_formula, data, test_rows, reml, factors = list()) {
  # test_rows: logical, TRUE for held-out rows (new levels may be among them)
  train <- data[!test_rows, ]
  test <- data[test_rows, ]
  fit <- lmer(as.formula(formula), data = train, REML = reml, control = ctrl)
  vc <- VarCorr(fit)
  terms <- lapply(names(vc), function(g) {
    m <- vc[[g]]
    list(group = g, columns = colnames(m), cov = unname(as.matrix(m)))
  })
  # the rows na.omit left out (lme4's na.action(fit)), by row_id
  dropped <- train$row_id[!complete.cases(train[, all.vars(as.formula(formula)), drop = FALSE])]
  d <- data
  d$split <- ifelse(test_rows, "test", "train")
  write.csv(d, paste0(name, ".csv"), row.names = FALSE, na = "")
  keep_test <- complete.cases(test[, all.vars(as.formula(formula))[-1], drop = FALSE])
  test <- test[keep_test, ]
  out[[name]] <<- list(
    formula = formula, py_formula = py_formula, reml = reml, factors = factors,
    logLik = as.numeric(logLik(fit)), n_obs = nobs(fit),
    fixef = list(names = I(names(fixef(fit))), values = I(unname(fixef(fit)))),
    se_fixef = I(unname(sqrt(diag(as.matrix(vcov(fit)))))),
    sigma2 = sigma(fit)^2, terms = terms, isSingular = isSingular(fit),
    dropped_row_ids = dropped,
    fitted = list(row_id = train$row_id[complete.cases(train[, all.vars(as.formula(formula)), drop = FALSE])],
                  values = unname(fitted(fit))),
    predictions = list(row_id = test$row_id,
                       conditional = unname(predict(fit, newdata = test, allow.new.levels = TRUE)),
                       population = unname(predict(fit, newdata = test, re.form = NA)))
  )
}

# An ordered factor (polynomial contrasts) crossed with an unordered one; ML.
cake2 <- cake[, c("replicate", "recipe", "temperature", "angle")]
cake2$replicate <- as.character(cake2$replicate)
cake2$row_id <- seq_len(nrow(cake2)) - 1L
set.seed(1)
newrep <- cake2[cake2$replicate == "1" & cake2$recipe == "A", ]
newrep$replicate <- "16"; newrep$row_id <- nrow(cake2) + seq_len(nrow(newrep)) - 1L
cake2 <- rbind(cake2, newrep)
test <- cake2$row_id %in% c(sample(0:269, 20), newrep$row_id)
case("cake_ml", "angle ~ recipe * temperature + (1 | recipe:replicate)",
     "angle ~ recipe * temperature + (1 | recipe:replicate)", cake2, test, FALSE,
     factors = list(temperature = list(levels = levels(cake$temperature), ordered = TRUE)))

# Factor random slopes: with and without the intercept, and lme4's || on a factor.
m <- as.data.frame(Machines)
m$Worker <- as.character(m$Worker); m$Machine <- as.character(m$Machine)
m$row_id <- seq_len(nrow(m)) - 1L
set.seed(2)
test <- m$row_id %in% c(sample(which(m$Worker != "6") - 1L, 8), which(m$Worker == "6") - 1L)
test_m <- test
case("machines_reml", "score ~ Machine + (Machine | Worker)",
     "score ~ Machine + (Machine | Worker)", m, test, TRUE)
case("machines_zero_reml", "score ~ Machine + (0 + Machine | Worker)",
     "score ~ Machine + (0 + Machine | Worker)", m, test, TRUE)
case("machines_dbl_ml", "score ~ Machine + (Machine || Worker)",
     "score ~ Machine + (Machine || Worker)", m, test, FALSE)

# Stateful transforms: orthogonal polynomials (reused at prediction), I().
s <- sleepstudy
s$Subject <- as.character(s$Subject)
s$row_id <- seq_len(nrow(s)) - 1L
set.seed(3)
test <- s$row_id %in% c(sample(which(s$Subject != "372") - 1L, 15), which(s$Subject == "372") - 1L)
case("sleep_poly_reml", "Reaction ~ poly(Days, 2) + (Days | Subject)",
     "Reaction ~ poly(Days, 2) + (Days | Subject)", s, test, TRUE)
case("sleep_quad_ml", "Reaction ~ Days + I(Days^2) + (1 | Subject)",
     "Reaction ~ Days + I(Days**2) + (1 | Subject)", s, test, FALSE)
# Random slopes on a transformed variable (orthogonal polynomials, state reused).
case("sleep_polyslope_ml", "Reaction ~ poly(Days, 2) + (poly(Days, 2) | Subject)",
     "Reaction ~ poly(Days, 2) + (poly(Days, 2) | Subject)", s, test, FALSE)
# lme4's || splits by term: the two poly() columns stay correlated (terms Subject, Subject.1).
case("sleep_polydbl_ml", "Reaction ~ poly(Days, 2) + (poly(Days, 2) || Subject)",
     "Reaction ~ poly(Days, 2) + (poly(Days, 2) || Subject)", s, test, FALSE)
# A random slope that is not a fixed effect.
case("sleep_slope_only_reml", "Reaction ~ 1 + (Days | Subject)",
     "Reaction ~ 1 + (Days | Subject)", s, test, TRUE)

# Missing data: na.omit drops every row with a missing value in a variable of the formula.
na <- s
na$Reaction[c(4, 51, 52)] <- NA
na$Days[c(100, 101)] <- NA
na$Subject[c(150)] <- NA
na$unused <- 1; na$unused[c(10, 20)] <- NA  # not in the formula: the rows stay
case("sleep_na_reml", "Reaction ~ Days + (Days | Subject)",
     "Reaction ~ Days + (Days | Subject)", na, test, TRUE)

# Stateful transforms learn their state before na.omit (R's model frame), and predict()
# reuses it (makepredictcall): scale(Days) with responses missing.
na2 <- s
na2$Reaction[c(5, 17, 40, 41, 90, 120, 121, 122, 160)] <- NA
case("sleep_na_scale_reml", "Reaction ~ scale(Days) + (1 | Subject)",
     "Reaction ~ scale(Days) + (1 | Subject)", na2, test, TRUE)

# A factor with an unused level (R's drop.unused.levels): Machine has levels A-D, D unused.
mu <- m
mu$Machine <- factor(mu$Machine, levels = c("A", "B", "C", "D"))
case("machines_unused_reml", "score ~ Machine + (1 | Worker)",
     "score ~ Machine + (1 | Worker)", mu, test_m, TRUE,
     factors = list(Machine = list(levels = c("A", "B", "C", "D"), ordered = FALSE)))

# Orthodont with R's factor order (Male first) and a quadratic age term.
o <- as.data.frame(Orthodont)
o$Subject <- as.character(o$Subject)
o$Sex <- factor(as.character(o$Sex), levels = c("Male", "Female"))  # nlme's order
o$row_id <- seq_len(nrow(o)) - 1L
set.seed(4)
test <- o$row_id %in% c(sample(which(o$Subject != "F11") - 1L, 10), which(o$Subject == "F11") - 1L)
case("orthodont_quad_reml", "distance ~ age + I(age^2) + Sex + (age | Subject)",
     "distance ~ age + I(age**2) + Sex + (age | Subject)", o, test, TRUE,
     factors = list(Sex = list(levels = c("Male", "Female"), ordered = FALSE)))

writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "lme4.json")
