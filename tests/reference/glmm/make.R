# GLMM reference cases for sklmm (simulated data), fitted with lme4 and glmmTMB.
#
# Run from this folder:   cd tests/reference/glmm && Rscript make.R
# (R 4.2.2, lme4 1.1-31, Matrix 1.5-3, glmmTMB 1.1.5, TMB 1.9.2, jsonlite; Debian 12 packages.)
#
# Writes, for each new case, <case>/data.csv, spec.json, lme4.json, tight.json, glmmTMB.json
# (binary_probit also lme4_agq25.json), and cbpp_binomial/agq_tight.json.
# cbpp_binomial/ and grouseticks_poisson/ are otherwise verbatim copies of the shared reference
# set (not produced here); this script only READS cbpp_binomial/{data.csv,lme4.json,lme4_agq10.json}.
#
# Everything is deterministic (set.seed per case) except the `timing` blocks and `generated`
# time stamps.  See README.md for every field.

suppressPackageStartupMessages({
  library(lme4)
  library(glmmTMB)
  library(jsonlite)
})
options(warn = 1, stringsAsFactors = FALSE)
RNGkind("Mersenne-Twister", "Inversion", "Rejection")

TOL_TIGHT <- 1e-12
VERS <- list(
  lme4_version = as.character(packageVersion("lme4")),
  Matrix_version = as.character(packageVersion("Matrix")),
  glmmTMB_version = as.character(packageVersion("glmmTMB")),
  TMB_version = as.character(packageVersion("TMB")),
  R_version = R.version.string,
  blas = unname(extSoftVersion()["BLAS"])
)
now <- function() format(Sys.time(), "%Y-%m-%dT%H:%M:%S%z", tz = "UTC")
wjson <- function(x, path) {
  writeLines(toJSON(x, auto_unbox = TRUE, digits = NA, null = "null", na = "null"), path)
}
chr <- function(x) as.character(unlist(x))
arr <- function(x) I(unname(as.vector(x)))          # always a JSON array, even of length 1
mat <- function(x) unname(as.matrix(x))

# ---------------------------------------------------------------------------------------------
# conditional log-density of one observation as a function of eta, with eta-derivatives
# ---------------------------------------------------------------------------------------------
family_funs <- function(family, link) {
  if (family == "binomial" && link == "logit") {
    list(ll = function(eta, y, n) dbinom(y, n, plogis(eta), log = TRUE),
         d1 = function(eta, y, n) y - n * plogis(eta),
         d2 = function(eta, y, n) -n * plogis(eta) * plogis(-eta))
  } else if (family == "binomial" && link == "probit") {
    lam <- function(r) exp(dnorm(r, log = TRUE) - pnorm(r, log.p = TRUE))   # Mills ratio phi/Phi
    list(ll = function(eta, y, n) lchoose(n, y) +
           ifelse(y > 0, y * pnorm(eta, log.p = TRUE), 0) +
           ifelse(n - y > 0, (n - y) * pnorm(-eta, log.p = TRUE), 0),
         d1 = function(eta, y, n) y * lam(eta) - (n - y) * lam(-eta),
         d2 = function(eta, y, n) -y * lam(eta) * (eta + lam(eta)) -
           (n - y) * lam(-eta) * (-eta + lam(-eta)))
  } else if (family == "poisson" && link == "log") {
    list(ll = function(eta, y, n) dpois(y, exp(eta), log = TRUE),
         d1 = function(eta, y, n) y - exp(eta),
         d2 = function(eta, y, n) -exp(eta))
  } else stop("family not handled")
}

# Exact marginal log-likelihood (1-d integration per level) and textbook Laplace with the
# observed curvature, for a model with ONE scalar random intercept, at given (beta, sd).
# eta0 = X beta + offset; b_j = sd * z_j, z_j ~ N(0, 1).
scalar_marginal <- function(eta0, y, n, grp, sd, FF) {
  out <- t(vapply(split(seq_along(y), grp), function(idx) {
    e <- eta0[idx]; yy <- y[idx]; nn <- n[idx]
    h  <- function(z) sum(FF$ll(e + sd * z, yy, nn)) - z^2 / 2 - 0.5 * log(2 * pi)
    h1 <- function(z) sd * sum(FF$d1(e + sd * z, yy, nn)) - z
    h2 <- function(z) sd^2 * sum(FF$d2(e + sd * z, yy, nn)) - 1
    z <- 0
    for (it in 1:500) {                       # Newton with step halving (h is concave)
      step <- -h1(z) / h2(z); hz <- h(z); a <- 1
      while (h(z + a * step) < hz - 1e-15 && a > 1e-10) a <- a / 2
      z <- z + a * step
      if (abs(a * step) < 1e-14) break
    }
    H <- -h2(z); hz <- h(z)
    f <- function(t) vapply(t, function(tt) exp(h(z + tt / sqrt(H)) - hz), 0)
    I <- integrate(f, -Inf, Inf, rel.tol = 1e-10, subdivisions = 2000L)$value
    c(exact = hz - 0.5 * log(H) + log(I), laplace = hz + 0.5 * log(2 * pi) - 0.5 * log(H))
  }, c(exact = 0, laplace = 0)))
  list(integrated = sum(out[, "exact"]), laplace_observed = sum(out[, "laplace"]))
}

# Textbook Laplace approximation (observed curvature, converged Newton mode per level) for a
# model with ONE random-effect term of any dimension k, at given (beta, covariance S).
vector_laplace <- function(spec, train, beta, S) {
  FF <- family_funs(spec$glm$family, spec$glm$link)
  tm <- spec$random[[1]]
  X <- as.matrix(train[, chr(spec$fixed_columns)])
  Z <- sapply(chr(tm$slopes), function(s) if (s == "(Intercept)") rep(1, nrow(train)) else train[[paste0("X:", s)]])
  Z <- matrix(Z, nrow(train))
  eta0 <- drop(X %*% beta) + offset_of(spec, train)
  y <- train[[spec$response]]; n <- trials_of(spec, train)
  Si <- solve(S); k <- ncol(S); ldS <- as.numeric(determinant(S)$modulus)
  sum(vapply(split(seq_len(nrow(train)), train[[tm$group]]), function(idx) {
    Zj <- Z[idx, , drop = FALSE]; e <- eta0[idx]; yy <- y[idx]; nn <- n[idx]
    h <- function(b) sum(FF$ll(e + drop(Zj %*% b), yy, nn)) - 0.5 * sum(b * (Si %*% b)) - 0.5 * ldS - 0.5 * k * log(2 * pi)
    Hf <- function(b) crossprod(Zj * (-FF$d2(e + drop(Zj %*% b), yy, nn)), Zj) + Si
    b <- rep(0, k)
    for (it in 1:500) {
      g <- drop(crossprod(Zj, FF$d1(e + drop(Zj %*% b), yy, nn))) - drop(Si %*% b)
      st <- solve(Hf(b), g); a <- 1; hb <- h(b)
      while (h(b + a * st) < hb - 1e-15 && a > 1e-10) a <- a / 2
      b <- b + a * st
      if (max(abs(a * st)) < 1e-14) break
    }
    h(b) + 0.5 * k * log(2 * pi) - 0.5 * as.numeric(determinant(Hf(b))$modulus)
  }, 0))
}
LAPLACE_TEXTBOOK_NOTE <- "logLik_laplace_textbook: computed here independently of lme4/glmmTMB at these estimates: textbook Laplace approximation with the OBSERVED curvature, Newton mode per level converged to |step| < 1e-14, log-determinant with the weights AT the mode. For the logit/log links this is the exact Laplace that lme4 approximates: lme4's own logLik (even with tolPwrss = 1e-12) takes its log-determinant ldL2 from the Cholesky factor of the last PIRLS iteration, i.e. with the weights one (small) PIRLS step before the mode, and so can differ in the 7th significant digit (binary_slope_logit: ~4e-7); glmmTMB agrees with the textbook value to ~1e-9"

saturated_loglik <- function(family, y, n) {
  if (family == "binomial") sum(dbinom(y, n, y / n, log = TRUE)) else sum(dpois(y, y, log = TRUE))
}

# ---------------------------------------------------------------------------------------------
# timing as in the shared reference set
# ---------------------------------------------------------------------------------------------
loadavg <- function() as.numeric(strsplit(readLines("/proc/loadavg"), " ")[[1]][1])
time_fit <- function(f, what, reps = 5) {
  la0 <- loadavg()
  st <- system.time(f())
  first <- st[["elapsed"]]
  k <- if (first < 0.1) max(2L, as.integer(ceiling(0.2 / max(first, 1e-3)))) else 1L
  el <- cpu <- numeric(reps)
  start <- 1L
  if (k == 1L) { el[1] <- first; cpu[1] <- st[["user.self"]] + st[["sys.self"]]; start <- 2L }
  for (r in start:reps) {
    s <- system.time(for (i in seq_len(k)) f())
    el[r] <- s[["elapsed"]] / k; cpu[r] <- (s[["user.self"]] + s[["sys.self"]]) / k
  }
  list(what = what, reps = reps, fits_per_rep = k, elapsed_s = arr(el), median_s = median(el),
       first_call_s = first, cpu_s = arr(cpu), cpu_over_elapsed = median(cpu / el),
       loadavg_1min = arr(c(la0, loadavg())),
       note = paste("each rep = system.time elapsed of fits_per_rep consecutive identical calls / fits_per_rep",
                    "(batching only when one fit < 0.1 s, in which case an extra first call warms up and is not",
                    "counted; otherwise the first call is rep 1). cpu_s = user + system CPU seconds of this R process",
                    "per fit; loadavg_1min = /proc/loadavg before and after the timing"),
       cores = parallel::detectCores())
}

capture_warnings <- function(expr) {
  w <- character(0)
  val <- withCallingHandlers(expr, warning = function(cnd) {
    w <<- c(w, conditionMessage(cnd)); invokeRestart("muffleWarning")
  })
  list(value = val, warnings = w)
}

# ---------------------------------------------------------------------------------------------
# data I/O: write data.csv, read it back, fit on what was read (so the CSV is exactly the data)
# ---------------------------------------------------------------------------------------------
write_data <- function(d, path, full_precision = character(0)) {
  for (v in full_precision) d[[v]] <- sprintf("%.17g", d[[v]])
  qcols <- which(vapply(d, is.character, TRUE) & !(names(d) %in% full_precision))
  write.csv(d, path, row.names = FALSE, quote = qcols)
}
read_data <- function(path, spec) {
  classes <- setNames(rep("character", length(spec$group_columns)), unlist(spec$group_columns))
  read.csv(path, colClasses = classes, check.names = FALSE)
}

# ---------------------------------------------------------------------------------------------
# one lme4 glmer fit -> the record used by lme4.json / tight.json / lme4_agq25.json
# ---------------------------------------------------------------------------------------------
glm_family <- function(spec) {
  g <- spec$glm
  if (g$family == "binomial") binomial(link = g$link) else poisson(link = g$link)
}
trials_of <- function(spec, d) if (is.null(spec$glm$trials)) rep(1, nrow(d)) else d[[spec$glm$trials]]
offset_of <- function(spec, d) if (is.null(spec$glm$offset)) rep(0, nrow(d)) else d[[spec$glm$offset]]

fit_glmer <- function(spec, train, nAGQ, tol) {
  ctrl <- if (is.null(tol)) glmerControl(optimizer = "bobyqa") else
    glmerControl(optimizer = "bobyqa", tolPwrss = tol)
  f <- as.formula(spec$formula)
  fam <- glm_family(spec)
  cw <- capture_warnings(glmer(f, data = train, family = fam, nAGQ = nAGQ, control = ctrl))
  list(fit = cw$value, warnings = cw$warnings,
       refit = function() suppressWarnings(glmer(f, data = train, family = fam, nAGQ = nAGQ, control = ctrl)),
       devfun = function() glmer(f, data = train, family = fam, nAGQ = nAGQ, control = ctrl, devFunOnly = TRUE))
}

random_terms_from_cov <- function(spec, covs) {
  lapply(seq_along(spec$random), function(k) {
    tm <- spec$random[[k]]
    S <- covs[[k]]
    list(term_index = k - 1L, group = arr(tm$group), columns = arr(unlist(tm$slopes)),
         cov_type = tm$cov, cov = mat(S), sd = arr(sqrt(diag(S))))
  })
}
chol_theta <- function(S) { L <- t(chol(S)); L[lower.tri(L, diag = TRUE)] }

new_level_info <- function(spec, train, test) {
  by_term <- lapply(spec$random, function(tm) !(test[[tm$group]] %in% unique(train[[tm$group]])))
  m <- do.call(cbind, by_term)
  list(new_level_by_term = lapply(by_term, arr), any_new_level = arr(apply(m, 1, any)),
       all_new_level = arr(apply(m, 1, all)))
}

lme4_record <- function(case, spec, train, test, fr, nAGQ, tol, timing = TRUE) {
  fit <- fr$fit
  fam <- spec$glm
  vc <- VarCorr(fit)
  covs <- lapply(spec$random, function(tm) as.matrix(vc[[tm$group]]))
  cmp <- as.list(getME(fit, "devcomp")$cmp)
  cmp <- lapply(cmp, function(v) if (is.na(v)) NULL else unname(v))
  re <- ranef(fit, condVar = TRUE)
  ranefs <- lapply(seq_along(spec$random), function(k) {
    tm <- spec$random[[k]]
    r <- re[[tm$group]]
    pv <- attr(r, "postVar")
    list(term_index = k - 1L, group = arr(tm$group), lme4_group = tm$group,
         columns = arr(colnames(r)), levels = arr(rownames(r)), lme4_levels = arr(rownames(r)),
         values = mat(r),
         condvar = lapply(seq_len(nrow(r)), function(j) mat(pv[, , j, drop = TRUE])))
  })
  X <- getME(fit, "X")
  Xd <- as.matrix(train[, chr(spec$fixed_columns)])
  nl <- new_level_info(spec, train, test)
  pc_l <- predict(fit, newdata = test, type = "link", allow.new.levels = TRUE)
  pp_l <- predict(fit, newdata = test, type = "link", re.form = NA)
  out <- c(list(case = case), VERS[c("lme4_version", "Matrix_version", "R_version", "blas")], list(
    formula = spec$formula, family = fam$family, link = fam$link, nAGQ = nAGQ,
    method = if (nAGQ == 1) "Laplace approximation (nAGQ = 1)" else
      sprintf("adaptive Gauss-Hermite quadrature, nAGQ = %d", nAGQ),
    optimizer = if (is.null(tol)) "bobyqa for both stages (glmerControl(optimizer='bobyqa'), defaults otherwise)" else
      sprintf("bobyqa for both stages, glmerControl(optimizer='bobyqa', tolPwrss=%g), defaults otherwise", tol),
    tolPwrss = if (is.null(tol)) 1e-7 else tol,
    call = sprintf("glmer(%s, data = train, family = %s(link = '%s'), nAGQ = %d, control = glmerControl(optimizer = 'bobyqa'%s))",
                   spec$formula, fam$family, fam$link, nAGQ, if (is.null(tol)) "" else sprintf(", tolPwrss = %g", tol)),
    n_obs = nobs(fit), n_test = nrow(test),
    n_levels = as.list(vapply(spec$random, function(tm) length(unique(train[[tm$group]])), 1L)) |>
      setNames(vapply(spec$random, function(tm) tm$group, "")),
    fixef = list(names = arr(names(fixef(fit))), values = arr(fixef(fit))),
    se_fixef = arr(sqrt(diag(as.matrix(vcov(fit))))),
    vcov_fixef = mat(vcov(fit)),
    vcov_fixef_source = "finite-difference Hessian of the deviance in (theta, beta), inverted, beta block (vcov(fit) default: use.hessian = TRUE)",
    vcov_fixef_rx = mat(vcov(fit, use.hessian = FALSE)),
    se_fixef_rx = arr(sqrt(diag(as.matrix(vcov(fit, use.hessian = FALSE))))),
    random_terms = lapply(random_terms_from_cov(spec, covs), function(r) c(r, list(lme4_group = r$group[[1]]))),
    lme4_varcorr = lapply(names(vc), function(g) list(lme4_group = g, columns = arr(colnames(vc[[g]])),
                                                        cov = mat(vc[[g]]))),
    theta = list(names = arr(names(getME(fit, "theta"))), values = arr(getME(fit, "theta"))),
    logLik = as.numeric(logLik(fit)), logLik_df = attr(logLik(fit), "df"),
    minus2logLik = -2 * as.numeric(logLik(fit)),
    deviance = deviance(fit),
    deviance_note = "deviance = lme4's deviance(fit) for a GLMM = sum of squared deviance residuals at the conditional modes (devcomp_cmp$drsum); the 'deviance' column of summary(fit) is minus2logLik",
    df_residual = df.residual(fit),
    devcomp_cmp = cmp,
    AIC = AIC(fit), BIC = BIC(fit),
    isSingular = isSingular(fit),
    converged_messages = arr(as.character(fit@optinfo$conv$lme4$messages)),
    optimizer_code = fit@optinfo$conv$opt, optimizer_feval = fit@optinfo$feval,
    warnings = arr(as.character(fr$warnings)),
    X_check_max_abs_diff = max(abs(as.matrix(X) - Xd)),
    ranef = ranefs,
    fitted = list(row_id = arr(train$row_id), response = arr(fitted(fit)),
                  link = arr(predict(fit, type = "link")),
                  note = "all train rows, in data.csv order; response = fitted(fit) (mean scale: probability for binomial; expected count for Poisson, offset included); link = predict(fit, type='link') (offset included)"),
    predictions = c(list(row_id = arr(test$row_id),
                         conditional_link = arr(pc_l),
                         conditional_response = arr(predict(fit, newdata = test, type = "response", allow.new.levels = TRUE)),
                         population_link = arr(pp_l),
                         population_response = arr(predict(fit, newdata = test, type = "response", re.form = NA))),
                    nl,
                    list(note = "conditional_* = predict(fit, newdata, type=, allow.new.levels=TRUE): terms whose level is unseen contribute 0 (so rows whose levels are all new get the population value); population_* = predict(fit, newdata, type=, re.form=NA); the link scale INCLUDES the offset where the model has one; response = inverse link of link"))
  ))
  if (timing) out$timing <- time_fit(fr$refit, sprintf("elapsed seconds of %s only; data already in memory", out$call))
  out
}

# exact / observed-Laplace log-likelihood of a scalar-intercept model at (beta, sd)
scalar_check <- function(spec, train, beta, sd) {
  FF <- family_funs(spec$glm$family, spec$glm$link)
  X <- as.matrix(train[, chr(spec$fixed_columns)])
  eta0 <- drop(X %*% beta) + offset_of(spec, train)
  scalar_marginal(eta0, train[[spec$response]], trials_of(spec, train),
                  train[[spec$random[[1]]$group]], sd, FF)
}
INTEGRATED_NOTE <- "computed here independently of lme4, at these estimates: logLik_integrated = exact marginal log-likelihood by 1-d numerical integration per level (stats::integrate, rel.tol 1e-10, after centring at the mode and scaling by the observed curvature); logLik_laplace_observed = textbook Laplace approximation with the observed curvature of the log integrand at its mode (as TMB/glmmTMB). For canonical links (logit, log) lme4's Laplace logLik equals logLik_laplace_observed (with a converged PIRLS: tight fit); for non-canonical links (probit) lme4's PIRLS-based Laplace uses the expected (Fisher) weights in the log-determinant and differs"

tight_summary <- function(rec_tight, rec_default) {
  list(call = paste("the same glmer call with glmerControl(optimizer = 'bobyqa', tolPwrss = 1e-12) (lme4's default",
                    "PIRLS tolerance is 1e-7); the full record of this fit is tight.json"),
       logLik = rec_tight$logLik, logLik_minus_default = rec_tight$logLik - rec_default$logLik,
       fixef = rec_tight$fixef$values, se_fixef = rec_tight$se_fixef, theta = rec_tight$theta$values,
       random_terms = lapply(rec_tight$random_terms, function(r) r[c("term_index", "columns", "cov", "sd")]),
       warnings = rec_tight$warnings)
}

# ---------------------------------------------------------------------------------------------
# glmmTMB fit -> glmmTMB.json
# ---------------------------------------------------------------------------------------------
glmmTMB_record <- function(case, spec, train, test, fr_default, fr_tight, scalar) {
  lme4_default <- fr_default$fit; lme4_tight <- fr_tight$fit
  f <- as.formula(spec$formula); fam <- glm_family(spec)
  cw <- capture_warnings(glmmTMB(f, data = train, family = fam))
  fit <- cw$value
  vc <- VarCorr(fit)$cond
  covs <- lapply(spec$random, function(tm) { S <- as.matrix(vc[[tm$group]]); attr(S, "stddev") <- NULL; attr(S, "correlation") <- NULL; S })
  theta_l <- unlist(lapply(covs, chol_theta))
  beta <- fixef(fit)$cond
  V <- as.matrix(vcov(fit)$cond)
  re <- ranef(fit, condVar = TRUE)$cond
  # conditional covariance of b given the estimates = inverse of the inner (random-effects) Hessian
  # of the negative joint log-likelihood at the mode; b is ordered level-major (as lme4's Zt)
  Hb <- fit$obj$env$spHess(fit$obj$env$last.par.best, random = TRUE)
  Vb <- as.matrix(solve(Hb))
  stopifnot(length(spec$random) == 1)
  ranefs <- lapply(seq_along(spec$random), function(k) {
    tm <- spec$random[[k]]
    r <- re[[tm$group]]; cv <- attr(r, "condVar")
    kk <- ncol(r)
    list(term_index = k - 1L, group = arr(tm$group), columns = arr(colnames(r)), levels = arr(rownames(r)),
         values = mat(r),
         condvar = lapply(seq_len(nrow(r)), function(j) { ii <- (j - 1) * kk + seq_len(kk); mat(Vb[ii, ii, drop = FALSE]) }),
         condvar_sdreport_diag = lapply(seq_len(nrow(r)), function(j) if (kk == 1) arr(cv[j]) else arr(diag(as.matrix(cv[, , j])))))
  })
  nl <- new_level_info(spec, train, test)
  pr <- function(type, ...) arr(predict(fit, newdata = test, type = type, ...))
  ll <- as.numeric(logLik(fit))
  dev_d <- fr_default$devfun()
  dev_t <- fr_tight$devfun()
  out <- c(list(case = case), VERS[c("glmmTMB_version", "TMB_version", "R_version")], list(
    formula = spec$formula, family = spec$glm$family, link = spec$glm$link,
    method = "Laplace approximation (TMB: observed Hessian of the joint log-likelihood in the random effects), all parameters optimised jointly by nlminb; glmmTMB defaults",
    call = sprintf("glmmTMB(%s, data = train, family = %s(link = '%s'))", spec$formula, spec$glm$family, spec$glm$link),
    n_obs = nobs(fit),
    logLik = ll, logLik_df = attr(logLik(fit), "df"), AIC = AIC(fit), BIC = BIC(fit),
    logLik_minus_lme4_laplace = ll - as.numeric(logLik(lme4_default)),
    logLik_minus_lme4_tight_pirls = ll - as.numeric(logLik(lme4_tight)),
    fixef = list(names = arr(names(beta)), values = arr(beta)),
    se_fixef = arr(sqrt(diag(V))), vcov_fixef = mat(V),
    random_terms = lapply(random_terms_from_cov(spec, covs), function(r) c(r, list(glmmTMB_group = r$group[[1]]))),
    theta = list(names = arr(names(getME(lme4_tight, "theta"))), values = arr(theta_l),
                 note = "lme4's parametrisation (lower-triangular Cholesky factor of each term's covariance, column-wise), converted from VarCorr(fit)"),
    glmmTMB_theta = list(values = arr(getME(fit, "theta")),
                         note = "glmmTMB's internal parameters: log standard deviations, then its correlation parameters"),
    lme4_objective_at_glmmTMB_estimates = list(
      what = "lme4's Laplace deviance function (the glmer call with devFunOnly = TRUE, a function of c(theta, beta)) evaluated at glmmTMB's estimates (covariances converted to lme4's theta)",
      theta_from_glmmTMB = arr(theta_l),
      lme4_logLik_at_glmmTMB_estimates = -dev_d(c(theta_l, beta)) / 2,
      lme4_logLik_at_lme4_estimates = as.numeric(logLik(lme4_default)),
      difference = -dev_d(c(theta_l, beta)) / 2 - as.numeric(logLik(lme4_default)),
      lme4_tight_logLik_at_glmmTMB_estimates = -dev_t(c(theta_l, beta)) / 2,
      lme4_tight_logLik_at_tight_estimates = as.numeric(logLik(lme4_tight)),
      difference_tight = -dev_t(c(theta_l, beta)) / 2 - as.numeric(logLik(lme4_tight)),
      note = "difference > 0: glmmTMB's estimates are better on lme4's own Laplace objective; < 0: lme4's optimum is better. The *_tight entries use the devfun of the tolPwrss = 1e-12 fit")),
    if (!is.null(scalar)) list(
      logLik_integrated = scalar$integrated, logLik_laplace_observed = scalar$laplace_observed,
      logLik_integrated_note = paste("at glmmTMB's estimates;", INTEGRATED_NOTE)) else list(),
    list(
    convergence = list(nlminb_convergence = fit$fit$convergence, nlminb_message = fit$fit$message,
                       pdHess = fit$sdr$pdHess, iterations = fit$fit$iterations,
                       evaluations = as.list(fit$fit$evaluations)),
    warnings = arr(as.character(cw$warnings)),
    ranef = ranefs,
    ranef_note = "values = ranef(fit)$cond (conditional modes); condvar = conditional covariance of each level's effects GIVEN the estimates (inverse of TMB's inner Hessian of the negative joint log-likelihood in b at the mode, fit$obj$env$spHess(last.par.best, random = TRUE); comparable with lme4's condVar); condvar_sdreport_diag = the diagonal that ranef(fit, condVar = TRUE) reports (TMB sdreport, which ALSO includes the uncertainty of the estimated parameters, so it is larger; glmmTMB 1.1.5 gives no off-diagonal there)",
    predictions = c(list(row_id = arr(test$row_id),
                         conditional_link = pr("link", allow.new.levels = TRUE),
                         conditional_response = pr("response", allow.new.levels = TRUE),
                         population_link = pr("link", re.form = NA),
                         population_response = pr("response", re.form = NA)),
                    nl,
                    list(note = "predict(fit, newdata, type=, allow.new.levels=TRUE) / (re.form=NA); unseen levels contribute 0; link scale includes the offset where the model has one")),
    timing = time_fit(function() suppressWarnings(glmmTMB(f, data = train, family = fam)),
                      "elapsed seconds of glmmTMB(formula, data=train, family=...) only, glmmTMB defaults (1 thread); data already in memory"),
    generated = now()))
  out
}

# ---------------------------------------------------------------------------------------------
# simulation helpers
# ---------------------------------------------------------------------------------------------
r6 <- function(x) round(x, 6)
glabels <- function(prefix, k, width = 3) sprintf(paste0("%s%0", width, "d"), prefix, k)

# ---------------------------------------------------------------------------------------------
# run one case
# ---------------------------------------------------------------------------------------------
run_case <- function(case, spec, d, agq = NULL, full_precision = character(0)) {
  cat("==== ", case, "\n")
  dir.create(case, showWarnings = FALSE)
  write_data(d, file.path(case, "data.csv"), full_precision)
  d <- read_data(file.path(case, "data.csv"), spec)
  spec$n_rows <- nrow(d); spec$n_train <- sum(d$split == "train"); spec$n_test <- sum(d$split == "test")
  wjson(spec, file.path(case, "spec.json"))
  train <- d[d$split == "train", ]; test <- d[d$split == "test", ]
  if (!is.null(spec$glm$offset)) {
    stopifnot(max(abs(eval(parse(text = spec$glm$offset_expr), train) - train[[spec$glm$offset]])) == 0)
  }
  scalar_term <- length(spec$random) == 1 && length(spec$random[[1]]$slopes) == 1

  f_def <- fit_glmer(spec, train, 1, NULL)
  f_tig <- fit_glmer(spec, train, 1, TOL_TIGHT)
  r_def <- lme4_record(case, spec, train, test, f_def, 1, NULL)
  r_tig <- lme4_record(case, spec, train, test, f_tig, 1, TOL_TIGHT)
  if (scalar_term) {
    s <- scalar_check(spec, train, fixef(f_def$fit), r_def$random_terms[[1]]$sd[1])
    r_def$logLik_integrated <- s$integrated; r_def$logLik_laplace_observed <- s$laplace_observed
    r_def$logLik_integrated_note <- INTEGRATED_NOTE
    s <- scalar_check(spec, train, fixef(f_tig$fit), r_tig$random_terms[[1]]$sd[1])
    r_tig$logLik_integrated <- s$integrated; r_tig$logLik_laplace_observed <- s$laplace_observed
    r_tig$logLik_integrated_note <- INTEGRATED_NOTE
  }
  S_of <- function(r) r$random_terms[[1]]$cov
  r_def$logLik_laplace_textbook <- vector_laplace(spec, train, fixef(f_def$fit), S_of(r_def))
  r_tig$logLik_laplace_textbook <- vector_laplace(spec, train, fixef(f_tig$fit), S_of(r_tig))
  r_def$logLik_laplace_textbook_note <- r_tig$logLik_laplace_textbook_note <- LAPLACE_TEXTBOOK_NOTE
  r_def$laplace_tight_pirls <- tight_summary(r_tig, r_def)
  r_def$generated <- now()
  r_tig$role <- "MAIN reference fit of this case: lme4 glmer Laplace with a converged PIRLS (tolPwrss = 1e-12); compare sklmm with these numbers"
  r_tig$logLik_minus_default <- r_tig$logLik - r_def$logLik
  r_tig$default_fit <- "lme4.json: the same fit with lme4's default tolPwrss = 1e-7"
  r_tig$generated <- now()
  wjson(r_def, file.path(case, "lme4.json"))
  wjson(r_tig, file.path(case, "tight.json"))

  sc_tmb <- NULL
  tmb <- glmmTMB_record(case, spec, train, test, f_def, f_tig, NULL)
  if (scalar_term) {
    s <- scalar_check(spec, train, tmb$fixef$values, tmb$random_terms[[1]]$sd[1])
    tmb$lme4_objective_at_glmmTMB_estimates$laplace_observed_at_glmmTMB_estimates <- s$laplace_observed
    tmb$lme4_objective_at_glmmTMB_estimates$integrated_at_glmmTMB_estimates <- s$integrated
    tmb$logLik_integrated <- s$integrated
    tmb$logLik_laplace_observed <- s$laplace_observed
    tmb$logLik_integrated_note <- paste("at glmmTMB's estimates;", INTEGRATED_NOTE)
  }
  tmb$logLik_laplace_textbook <- vector_laplace(spec, train, unlist(tmb$fixef$values), tmb$random_terms[[1]]$cov)
  tmb$logLik_laplace_textbook_note <- LAPLACE_TEXTBOOK_NOTE
  wjson(tmb, file.path(case, "glmmTMB.json"))

  res <- list(default = r_def, tight = r_tig, tmb = tmb)
  if (!is.null(agq)) {
    y <- train[[spec$response]]; n <- trials_of(spec, train)
    lsat <- saturated_loglik(spec$glm$family, y, n)
    agq_rec <- function(tol) {
      fr <- fit_glmer(spec, train, agq, tol)
      r <- lme4_record(case, spec, train, test, fr, agq, tol, timing = is.null(tol))
      s <- scalar_check(spec, train, fixef(fr$fit), r$random_terms[[1]]$sd[1])
      r$logLik_integrated <- s$integrated; r$logLik_laplace_observed <- s$laplace_observed
      r$logLik_integrated_note <- INTEGRATED_NOTE
      r$logLik_saturated <- lsat
      r$logLik_full <- r$logLik + lsat
      r$AIC_full <- -2 * r$logLik_full + 2 * r$logLik_df
      r$BIC_full <- -2 * r$logLik_full + log(r$n_obs) * r$logLik_df
      r$logLik_note <- paste("lme4 1.1-31 reports logLik/AIC/BIC/deviance of nAGQ > 1 fits on a different scale from nAGQ = 1",
                             "(lme4 issues #161, #567): its AGQ deviance is built from deviance residuals and omits the saturated",
                             "log-likelihood. logLik_full = logLik + logLik_saturated is the real marginal log-likelihood",
                             "(comparable with the Laplace fit, glmmTMB and logLik_integrated); logLik_saturated = sum_i log f(y_i | mu_i = y_i)",
                             "(binomial: dbinom(y, n, y/n, log=TRUE), which is exactly 0 for a 0/1 response; Poisson: dpois(y, y, log=TRUE)).",
                             "AIC_full / BIC_full use logLik_full.")
      r
    }
    ra <- agq_rec(NULL); rt <- agq_rec(TOL_TIGHT)
    ra$agq_tight_pirls <- list(
      call = "the same nAGQ fit with glmerControl(optimizer = 'bobyqa', tolPwrss = 1e-12)",
      logLik = rt$logLik, logLik_full = rt$logLik_full, logLik_full_minus_default = rt$logLik_full - ra$logLik_full,
      fixef = rt$fixef$values, se_fixef = rt$se_fixef, theta = rt$theta$values,
      random_terms = lapply(rt$random_terms, function(r) r[c("term_index", "columns", "cov", "sd")]),
      logLik_integrated = rt$logLik_integrated, warnings = rt$warnings,
      ranef = rt$ranef, predictions = rt$predictions)
    ra$generated <- now()
    wjson(ra, file.path(case, sprintf("lme4_agq%d.json", agq)))
    res$agq <- ra
  }
  res
}

base_spec <- function(name, description, formula, response, fixed, random, glm, split_details, seed,
                      simulation, nAGQ = list(1), nAGQ_note, fits) {
  list(name = name, set = "reference", family_dir = "glmm", description = description,
       source = "simulated by tests/reference/glmm/make.R", formula = formula, reml = FALSE,
       response = response, fixed = arr(fixed), fixed_columns = arr(paste0("X:", fixed)),
       random = random, group_columns = arr(unique(vapply(random, function(r) r$group, ""))),
       split = list(column = "split", method = "simulated",
                    details = split_details, seed = seed,
                    rng = "R set.seed() with Mersenne-Twister / Inversion / Rejection sampling (R >= 3.6 defaults)",
                    synthetic_test_rows = FALSE),
       data = "data.csv", n_rows = NA, n_train = NA, n_test = NA, notes = "",
       glm = glm, simulation = simulation,
       estimation = "maximum likelihood; tight.json (MAIN): Laplace approximation (nAGQ = 1) with tolPwrss = 1e-12; lme4.json: the same with lme4's default tolPwrss",
       main_fit = "tight.json", nAGQ = nAGQ, nAGQ_note = nAGQ_note, fits = fits)
}
FITS <- list(tight.json = "MAIN: lme4::glmer, Laplace (nAGQ = 1), glmerControl(optimizer = 'bobyqa', tolPwrss = 1e-12) (converged PIRLS)",
             lme4.json = "lme4::glmer, Laplace (nAGQ = 1), glmerControl(optimizer = 'bobyqa') (default tolPwrss = 1e-7); laplace_tight_pirls summarises tight.json",
             glmmTMB.json = "glmmTMB::glmmTMB (Laplace with the observed Hessian): logLik, estimates, conditional modes, test predictions, timing")

# =============================================================================================
# 1. binary_slope_logit: y ~ x1 + x2 + (1 + x1 | g), logit
# =============================================================================================
make_binary_slope_logit <- function() {
  seed <- 20261201; set.seed(seed)
  J <- 60
  beta <- c(-0.4, 0.8, -0.6)
  sds <- c(0.8, 0.5); rho <- 0.4
  Sigma <- diag(sds) %*% matrix(c(1, rho, rho, 1), 2) %*% diag(sds)
  sizes <- sample(10:40, J, replace = TRUE)
  L <- t(chol(Sigma))
  b <- t(L %*% matrix(rnorm(2 * (J + 2)), 2))          # J seen + 2 new groups
  labs <- c(glabels("g", 1:J), "new1", "new2")
  sim_rows <- function(gidx) {
    n <- length(gidx)
    x1 <- r6(rnorm(n)); x2 <- r6(runif(n, -1, 2))
    eta <- beta[1] + beta[2] * x1 + beta[3] * x2 + b[gidx, 1] + b[gidx, 2] * x1
    data.frame(y = rbinom(n, 1, plogis(eta)), x1 = x1, x2 = x2, g = labs[gidx])
  }
  tr <- sim_rows(rep(1:J, sizes))
  tr <- tr[sample(nrow(tr)), ]
  te <- rbind(sim_rows(sort(sample(1:J, 40, replace = TRUE))), sim_rows(rep(J + 1:2, each = 10)))
  d <- rbind(cbind(split = "train", tr), cbind(split = "test", te))
  d <- data.frame(row_id = seq_len(nrow(d)) - 1L, split = d$split, synthetic = 0L,
                  y = d$y, x1 = d$x1, x2 = d$x2, g = d$g,
                  `X:(Intercept)` = 1L, `X:x1` = d$x1, `X:x2` = d$x2, check.names = FALSE)
  spec <- base_spec(
    "binary_slope_logit",
    "Simulated binary (0/1) response, logit link, correlated random intercept and slope of x1 per group g (60 groups of 10-40 rows), fixed x1 (N(0,1)) and x2 (U(-1,2)).",
    "y ~ x1 + x2 + (1 + x1 | g)", "y", c("(Intercept)", "x1", "x2"),
    list(list(group = "g", slopes = arr(c("(Intercept)", "x1")), cov = "unstructured")),
    list(family = "binomial", link = "logit", response_type = "binary", trials = NULL, offset = NULL, offset_expr = NULL),
    paste("train: 60 groups g001-g060 with sizes sample(10:40) (rows shuffled); test: 40 extra rows simulated",
          "from the same model in randomly chosen seen groups (their true random effects), then 2 new groups",
          "new1, new2 with 10 rows each (new random effects). All responses (test too) are simulated draws;",
          "the test responses are not used by the fits."),
    seed,
    list(beta = list(names = arr(c("(Intercept)", "x1", "x2")), values = arr(beta)),
         re_sd = arr(sds), re_cor = rho, x1 = "round(rnorm(n), 6)", x2 = "round(runif(n, -1, 2), 6)",
         y = "rbinom(n, 1, plogis(eta))"),
    list(1), "vector-valued random-effect term: lme4 allows only the Laplace approximation (nAGQ = 1)", FITS)
  run_case("binary_slope_logit", spec, d)
}

# =============================================================================================
# 2. binary_probit: y ~ x + (1 | g), probit, large random-intercept sd
# =============================================================================================
make_binary_probit <- function() {
  seed <- 20261202; set.seed(seed)
  J <- 100
  beta <- c(0.3, 0.7); sdb <- 1.5
  sizes <- sample(30:50, J, replace = TRUE)
  b <- rnorm(J + 2, 0, sdb)
  labs <- c(glabels("g", 1:J), "new1", "new2")
  sim_rows <- function(gidx) {
    n <- length(gidx)
    x <- r6(rnorm(n))
    eta <- beta[1] + beta[2] * x + b[gidx]
    data.frame(y = rbinom(n, 1, pnorm(eta)), x = x, g = labs[gidx])
  }
  tr <- sim_rows(rep(1:J, sizes))
  tr <- tr[sample(nrow(tr)), ]
  te <- rbind(sim_rows(sort(sample(1:J, 40, replace = TRUE))), sim_rows(rep(J + 1:2, each = 10)))
  d <- rbind(cbind(split = "train", tr), cbind(split = "test", te))
  d <- data.frame(row_id = seq_len(nrow(d)) - 1L, split = d$split, synthetic = 0L,
                  y = d$y, x = d$x, g = d$g, `X:(Intercept)` = 1L, `X:x` = d$x, check.names = FALSE)
  fits <- c(FITS, list(lme4_agq25.json = "lme4::glmer, adaptive Gauss-Hermite quadrature (nAGQ = 25), bobyqa, default tolPwrss; agq_tight_pirls: the same with tolPwrss = 1e-12"))
  fits$glmmTMB.json <- "glmmTMB::glmmTMB (Laplace with the OBSERVED Hessian = textbook Laplace; differs from lme4's expected-curvature Laplace for this non-canonical link): logLik, estimates, conditional modes, test predictions, logLik_integrated / logLik_laplace_observed at its estimates, timing"
  spec <- base_spec(
    "binary_probit",
    "Simulated binary (0/1) response, PROBIT link, random intercept per group g (100 groups of 30-50 rows) with a large sd (1.5), fixed x (N(0,1)). Non-canonical link: lme4's Laplace uses the expected (Fisher) curvature in the log-determinant, glmmTMB the observed one, so their logLik and estimates differ; lme4_agq25.json and logLik_integrated give the exact likelihood.",
    "y ~ x + (1 | g)", "y", c("(Intercept)", "x"),
    list(list(group = "g", slopes = arr("(Intercept)"), cov = "unstructured")),
    list(family = "binomial", link = "probit", response_type = "binary", trials = NULL, offset = NULL, offset_expr = NULL),
    paste("train: 100 groups g001-g100 with sizes sample(30:50) (rows shuffled); test: 40 extra rows simulated",
          "from the same model in randomly chosen seen groups, then 2 new groups new1, new2 with 10 rows each.",
          "All responses (test too) are simulated draws; the test responses are not used by the fits."),
    seed,
    list(beta = list(names = arr(c("(Intercept)", "x")), values = arr(beta)), re_sd = arr(sdb),
         x = "round(rnorm(n), 6)", y = "rbinom(n, 1, pnorm(eta))"),
    list(1, 25), "a single scalar random-effect term: lme4 also allows adaptive Gauss-Hermite quadrature (lme4_agq25.json)", fits)
  run_case("binary_probit", spec, d, agq = 25)
}

# =============================================================================================
# 3. poisson_offset: count ~ x + offset(log(t)) + (1 | site)
# =============================================================================================
make_poisson_offset <- function() {
  seed <- 20261203; set.seed(seed)
  J <- 40
  beta <- c(-0.5, 0.45); sdb <- 0.6
  sizes <- sample(10:30, J, replace = TRUE)
  b <- rnorm(J + 2, 0, sdb)
  labs <- c(glabels("s", 1:J, 2), "new1", "new2")
  sim_rows <- function(gidx) {
    n <- length(gidx)
    x <- r6(rnorm(n)); t <- round(runif(n, 0.5, 5), 4)
    eta <- beta[1] + beta[2] * x + b[gidx] + log(t)
    data.frame(count = rpois(n, exp(eta)), x = x, t = t, site = labs[gidx])
  }
  tr <- sim_rows(rep(1:J, sizes))
  tr <- tr[sample(nrow(tr)), ]
  te <- rbind(sim_rows(sort(sample(1:J, 40, replace = TRUE))), sim_rows(rep(J + 1:2, each = 10)))
  d <- rbind(cbind(split = "train", tr), cbind(split = "test", te))
  d <- data.frame(row_id = seq_len(nrow(d)) - 1L, split = d$split, synthetic = 0L,
                  count = d$count, x = d$x, t = d$t, offset = log(d$t), site = d$site,
                  `X:(Intercept)` = 1L, `X:x` = d$x, check.names = FALSE)
  spec <- base_spec(
    "poisson_offset",
    "Simulated Poisson counts with exposure t (U(0.5, 5)): log link, offset log(t), random intercept per site (40 sites of 10-30 rows), fixed x (N(0,1)).",
    "count ~ x + offset(log(t)) + (1 | site)", "count", c("(Intercept)", "x"),
    list(list(group = "site", slopes = arr("(Intercept)"), cov = "unstructured")),
    list(family = "poisson", link = "log", response_type = "count", trials = NULL, offset = "offset",
         offset_expr = "log(t)",
         offset_note = "data.csv column `offset` = log(t), written with 17 significant digits (equal to R's log(t) bit for bit); it enters the linear predictor with coefficient 1: eta = X beta + Z b + offset. All link-scale numbers (fitted link, predictions *_link) INCLUDE the offset."),
    paste("train: 40 sites s01-s40 with sizes sample(10:30) (rows shuffled); test: 40 extra rows simulated",
          "from the same model in randomly chosen seen sites, then 2 new sites new1, new2 with 10 rows each.",
          "All responses (test too) are simulated draws; the test responses are not used by the fits."),
    seed,
    list(beta = list(names = arr(c("(Intercept)", "x")), values = arr(beta)), re_sd = arr(sdb),
         x = "round(rnorm(n), 6)", t = "round(runif(n, 0.5, 5), 4)", y = "rpois(n, exp(eta)), eta including log(t)"),
    list(1), "a single scalar term: nAGQ > 1 would be allowed but is not provided here (Laplace only)", FITS)
  spec$notes <- "The link-scale predictions and fitted values include the offset log(t) of their row."
  run_case("poisson_offset", spec, d, full_precision = "offset")
}

# =============================================================================================
# 4. cbpp_binomial/agq_tight.json: nAGQ = 10 with tolPwrss = 1e-12
# =============================================================================================
make_cbpp_agq_tight <- function() {
  cat("==== cbpp_binomial agq_tight\n")
  spec <- fromJSON("cbpp_binomial/spec.json", simplifyVector = FALSE)
  d <- read.csv("cbpp_binomial/data.csv", colClasses = c(herd = "character", period = "character"), check.names = FALSE)
  d$period <- factor(d$period, levels = c("1", "2", "3", "4"))
  train <- d[d$split == "train", ]
  old <- fromJSON("cbpp_binomial/lme4_agq10.json", simplifyVector = FALSE)
  old1 <- fromJSON("cbpp_binomial/lme4.json", simplifyVector = FALSE)
  # self-check of the integration code against the shared lme4.json
  s <- scalar_check(spec, train, unlist(old1$fixef$values), old1$theta$values[[1]])
  chk <- c(integrated = s$integrated - old1$logLik_integrated, laplace = s$laplace_observed - old1$logLik_laplace_observed)
  cat("integration self-check vs shared cbpp lme4.json:", format(chk, digits = 3), "\n")
  tm <- fromJSON("cbpp_binomial/glmmTMB.json", simplifyVector = FALSE)
  s2 <- scalar_check(spec, train, unlist(tm$fixef$values), tm$random_terms[[1]]$sd[[1]])
  chk2 <- c(laplace_vs_glmmTMB_logLik = s2$laplace_observed - tm$logLik,
            laplace_vs_file = s2$laplace_observed - tm$lme4_objective_at_glmmTMB_estimates$laplace_observed_at_glmmTMB_estimates,
            integrated_vs_file = s2$integrated - tm$lme4_objective_at_glmmTMB_estimates$integrated_at_glmmTMB_estimates)
  cat("at the shared glmmTMB estimates:", paste(names(chk2), format(chk2, digits = 3)), "\n")
  stopifnot(abs(chk[1]) < 1e-8, abs(chk2[3]) < 1e-8, abs(chk2[1]) < 1e-8)
  f <- as.formula(spec$formula)
  fit_d <- glmer(f, data = train, family = binomial, nAGQ = 10, control = glmerControl(optimizer = "bobyqa"))
  cw <- capture_warnings(glmer(f, data = train, family = binomial, nAGQ = 10,
                               control = glmerControl(optimizer = "bobyqa", tolPwrss = TOL_TIGHT)))
  fit_t <- cw$value
  lsat <- sum(dbinom(train$incidence, train$size, train$incidence / train$size, log = TRUE))
  reproduce <- c(logLik = as.numeric(logLik(fit_d)) - old$logLik,
                 fixef_max_abs = max(abs(fixef(fit_d) - unlist(old$fixef$values))),
                 theta = getME(fit_d, "theta")[[1]] - old$theta$values[[1]])
  cat("default nAGQ=10 refit minus shared lme4_agq10.json:", format(reproduce, digits = 3), "\n")
  th <- getME(fit_t, "theta")
  s_t <- scalar_check(spec, train, fixef(fit_t), th[[1]])
  ll <- as.numeric(logLik(fit_t))
  vc <- as.matrix(VarCorr(fit_t)$herd)
  out <- c(list(case = "cbpp_binomial"), VERS[c("lme4_version", "Matrix_version", "R_version", "blas")], list(
    formula = spec$formula, family = "binomial", link = "logit", nAGQ = 10L,
    call = "glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = train, family = binomial, nAGQ = 10, control = glmerControl(optimizer = 'bobyqa', tolPwrss = 1e-12))",
    n_obs = nobs(fit_t),
    fixef = list(names = arr(names(fixef(fit_t))), values = arr(fixef(fit_t))),
    se_fixef = arr(sqrt(diag(as.matrix(vcov(fit_t))))),
    vcov_fixef = mat(vcov(fit_t)),
    theta = list(names = arr(names(th)), values = arr(th)),
    random_terms = list(list(term_index = 0L, group = arr("herd"), columns = arr("(Intercept)"),
                             cov_type = "unstructured", cov = mat(vc), sd = arr(sqrt(diag(vc))))),
    logLik = ll, logLik_saturated = lsat, logLik_full = ll + lsat,
    logLik_integrated = s_t$integrated,
    logLik_integrated_note = "exact marginal log-likelihood at these estimates (1-d integration per herd, rel.tol 1e-10), as in lme4.json",
    logLik_note = "as lme4_agq10.json: logLik is lme4's nAGQ > 1 value without the saturated term; logLik_full = logLik + logLik_saturated",
    default_fit = list(file = "lme4_agq10.json", logLik = old$logLik, logLik_full = old$logLik_full,
                       fixef = arr(unlist(old$fixef$values)), theta = arr(unlist(old$theta$values)),
                       refit_here_minus_file = as.list(reproduce)),
    tight_minus_default = list(logLik_full = ll + lsat - old$logLik_full,
                               fixef = arr(fixef(fit_t) - unlist(old$fixef$values)),
                               theta = arr(th - unlist(old$theta$values)),
                               se_fixef = arr(sqrt(diag(as.matrix(vcov(fit_t)))) - unlist(old$se_fixef))),
    isSingular = isSingular(fit_t),
    converged_messages = arr(as.character(fit_t@optinfo$conv$lme4$messages)),
    warnings = arr(as.character(cw$warnings)),
    generated = now()))
  d_ll <- ll + lsat - old$logLik_full
  out$note <- sprintf(paste("tolPwrss = 1e-12 changes the nAGQ = 10 fit by %.3g in logLik_full and at most %.3g in the",
                            "fixed effects, %.3g in theta: %s"), d_ll, max(abs(out$tight_minus_default$fixef)),
                      abs(out$tight_minus_default$theta[1]),
                      if (abs(d_ll) > 1e-6) "use these numbers as the converged nAGQ = 10 reference" else
                        "negligible; lme4_agq10.json is already converged")
  wjson(out, "cbpp_binomial/agq_tight.json")
  out
}

res_cbpp <- make_cbpp_agq_tight()
res1 <- make_binary_slope_logit()
res2 <- make_binary_probit()
res3 <- make_poisson_offset()

# ---------------------------------------------------------------------------------------------
# summary on stdout
# ---------------------------------------------------------------------------------------------
summ <- function(name, r) {
  cat(sprintf("\n%s\n  logLik default %.12f  tight %.12f (tight - default %.3g)\n  glmmTMB %.12f (glmmTMB - tight %.3g)\n",
              name, r$default$logLik, r$tight$logLik, r$tight$logLik - r$default$logLik,
              r$tmb$logLik, r$tmb$logLik - r$tight$logLik))
  cat("  fixef tight ", format(unlist(r$tight$fixef$values), digits = 10), "\n  fixef TMB   ",
      format(unlist(r$tmb$fixef$values), digits = 10), "\n")
  cat("  theta tight ", format(unlist(r$tight$theta$values), digits = 10), "\n  theta TMB   ",
      format(unlist(r$tmb$theta$values), digits = 10), "\n")
  cat(sprintf("  textbook Laplace: at default est %.12f, at tight est %.12f (tight logLik - textbook %.3g), at TMB est %.12f (TMB logLik - textbook %.3g)\n",
              r$default$logLik_laplace_textbook, r$tight$logLik_laplace_textbook, r$tight$logLik - r$tight$logLik_laplace_textbook,
              r$tmb$logLik_laplace_textbook, r$tmb$logLik - r$tmb$logLik_laplace_textbook))
  if (!is.null(r$agq)) cat(sprintf("  AGQ logLik %.12f  logLik_full %.12f  integrated at AGQ est %.12f; tight AGQ logLik_full %.12f\n",
                                   r$agq$logLik, r$agq$logLik_full, r$agq$logLik_integrated, r$agq$agq_tight_pirls$logLik_full))
  if (!is.null(r$tmb$logLik_integrated)) cat(sprintf("  at TMB est: integrated %.12f  laplace_observed %.12f\n",
                                                     r$tmb$logLik_integrated, r$tmb$logLik_laplace_observed))
  if (!is.null(r$tight$logLik_integrated)) cat(sprintf("  at tight est: integrated %.12f  laplace_observed %.12f\n",
                                                       r$tight$logLik_integrated, r$tight$logLik_laplace_observed))
}
summ("binary_slope_logit", res1); summ("binary_probit", res2); summ("poisson_offset", res3)
cat(sprintf("\ncbpp agq10 tight: logLik_full %.12f (tight - default %.3g)\n", res_cbpp$logLik_full,
            res_cbpp$tight_minus_default$logLik_full))
