// ALS: the Gram matrix, one half-step (als_solve) and the training objective (als_loss) on
// problems small enough to solve by hand, and bitwise equality for every thread count.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.hpp"
#include "recore/als.hpp"
#include "test_data.hpp"

namespace {

using recore::AlsOptions;
using recore::Confidence;
using recore::CsrView;
using recore::Feedback;
using recore::MatrixView;
using recore::Solver;
using recore::testing::Csr;
using recore::testing::Dense;

// The fixed side of every hand-solved case: three item rows of two factors,
//   y0 = (1, 2),  y1 = (3, 1),  y2 = (0, 1).
// Y^T Y = y0 y0^T + y1 y1^T + y2 y2^T
//       = [[1, 2], [2, 4]] + [[9, 3], [3, 1]] + [[0, 0], [0, 1]] = [[10, 5], [5, 6]].
template <typename T>
Dense<T> hand_items() {
  return Dense<T>(3, 2, {1, 2, 3, 1, 0, 1});
}

template <typename T>
Dense<T> hand_items_gram() {
  return Dense<T>(2, 2, {10, 5, 5, 6});
}

// The row-solve paths of the CG solver: rows gathered into a block (the default), rows read
// in place (taken by rows longer than the gather limit), and blocked CG (taken when the fixed
// factors are far larger than the caches). The overrides are engine-wide: reset on exit.
enum class CgPath { gathered, in_place, blocked };

class CgPathScope {
 public:
  // block_rows: fixed rows per block of blocked CG (fewer than the fixed side has, so that
  // every row's CG runs over several blocks).
  explicit CgPathScope(CgPath path, int64_t block_rows = 2) {
    recore::set_gather_limit_for_testing(path == CgPath::in_place ? 1 : 0);
    recore::set_block_rows_for_testing(path == CgPath::blocked ? block_rows : 0);
  }
  ~CgPathScope() {
    recore::set_gather_limit_for_testing(0);
    recore::set_block_rows_for_testing(0);
  }
  CgPathScope(const CgPathScope&) = delete;
  CgPathScope& operator=(const CgPathScope&) = delete;
};

struct SolverCase {
  Solver solver;
  CgPath path;
  const char* name;
  int block_size;       // subspace solver
  int sweeps_per_step;  // subspace solver: sweeps for each CG step count checked
};

// Two CG steps solve a 2 x 2 system exactly (up to rounding) from any start; three show that
// further steps on a solved row change nothing beyond rounding. The subspace solver with one
// block of both factors is the exact solve in one sweep; with blocks of one factor (coordinate
// descent) it converges geometrically, to rounding within 2 x 60 sweeps on these systems.
const SolverCase kSolverCases[] = {
    {Solver::cholesky, CgPath::gathered, "cholesky", 32, 1},
    {Solver::conjugate_gradient, CgPath::gathered, "cg", 32, 1},
    {Solver::conjugate_gradient, CgPath::in_place, "cg in place", 32, 1},
    {Solver::conjugate_gradient, CgPath::blocked, "cg blocked", 32, 1},
    {Solver::subspace, CgPath::gathered, "subspace", 2, 1},
    {Solver::subspace, CgPath::in_place, "subspace in place", 2, 1},
    {Solver::subspace, CgPath::gathered, "subspace by coordinates", 1, 60},
    {Solver::subspace, CgPath::in_place, "subspace by coordinates in place", 1, 60},
};

template <typename T>
double tolerance() {
  return sizeof(T) == 4 ? 2e-6 : 1e-13;
}

// Solves every row of user_items against the hand items from a warm start away from the
// solution (CG starts from the current factors) and checks each row against `expected`.
template <typename T, typename I>
void check_half_step(const Csr<T, I>& user_items, const AlsOptions& options, const std::vector<double>& expected) {
  const Dense<T> items = hand_items<T>();
  const Dense<T> gram = hand_items_gram<T>();
  for (const SolverCase& c : kSolverCases) {
    for (int cg_steps : {2, 3}) {
      if (c.solver == Solver::cholesky && cg_steps == 3) continue;
      CgPathScope scope(c.path);
      AlsOptions o = options;
      o.solver = c.solver;
      o.cg_steps = cg_steps;
      o.block_size = c.block_size;
      o.subspace_sweeps = (cg_steps - 1) * c.sweeps_per_step;
      Dense<T> users(user_items.rows, 2, std::vector<T>(user_items.rows * 2, T(0.5)));
      users.values[0] = T(-0.75);
      recore::als_solve<T, I>(user_items.view(), items.view(), o.feedback == Feedback::implicit ? gram.view()
                                                                                               : MatrixView<const T>{},
                              users.mutable_view(), o);
      recore::testing::current_test_detail() = std::string(c.name) + ", " + (sizeof(T) == 4 ? "float" : "double") +
                                                ", cg_steps " + std::to_string(cg_steps);
      for (int64_t k = 0; k < users.rows * 2; ++k) CHECK_NEAR(users.values[k], expected[k], tolerance<T>());
      recore::testing::current_test_detail().clear();
    }
  }
}

// Explicit feedback, lambda = 1. Users x items:
//   user 0 rated item 0 as 5 and item 1 as 4; user 1 rated item 2 as 3; user 2 rated nothing.
// User 0: A = y0 y0^T + y1 y1^T + lambda I = [[10, 5], [5, 5]] + I = [[11, 5], [5, 6]],
//         b = 5 y0 + 4 y1 = (5 + 12, 10 + 4) = (17, 14), det A = 66 - 25 = 41,
//         x = A^-1 b = [[6, -5], [-5, 11]] (17, 14) / 41 = ((102 - 70), (-85 + 154)) / 41 = (32, 69) / 41.
// User 1: A = y2 y2^T + I = [[1, 0], [0, 2]], b = 3 y2 = (0, 3), x = (0, 1.5).
// User 2: no ratings, x = 0.
// Weighted regularization (lambda_u = lambda * |u|): user 0 has lambda 2,
//         A = [[12, 5], [5, 7]], det A = 84 - 25 = 59,
//         x = [[7, -5], [-5, 12]] (17, 14) / 59 = ((119 - 70), (-85 + 168)) / 59 = (49, 83) / 59;
//         user 1 has one rating, so lambda 1 and the same x as before.
template <typename T, typename I>
void check_explicit() {
  const Csr<T, I> ratings(3, 3, {0, 2, 3, 3}, {0, 1, 2}, {5, 4, 3});
  AlsOptions options;
  options.feedback = Feedback::explicit_ratings;
  options.regularization = 1.0;
  check_half_step(ratings, options, {32.0 / 41, 69.0 / 41, 0, 1.5, 0, 0});
  options.weighted_regularization = true;
  check_half_step(ratings, options, {49.0 / 59, 83.0 / 59, 0, 1.5, 0, 0});
}

// Implicit feedback, lambda = 1. Users x items: user 0 has item 0 with value 1 and item 2
// with value 2; user 1 has nothing (x = 0: preference 0 everywhere).
// Linear confidence, alpha = 1: c_0 = 1 + 1 = 2, c_2 = 1 + 2 = 3.
//   A = Y^T Y + (c_0 - 1) y0 y0^T + (c_2 - 1) y2 y2^T + I
//     = [[10, 5], [5, 6]] + [[1, 2], [2, 4]] + [[0, 0], [0, 2]] + I = [[12, 7], [7, 13]],
//   b = c_0 y0 + c_2 y2 = (2, 4) + (0, 3) = (2, 7), det A = 156 - 49 = 107,
//   x = [[13, -7], [-7, 12]] (2, 7) / 107 = ((26 - 49), (-14 + 84)) / 107 = (-23, 70) / 107.
// Scaled confidence, alpha = 3: c_0 = 3, c_2 = 6.
//   A = [[10, 5], [5, 6]] + 2 [[1, 2], [2, 4]] + 5 [[0, 0], [0, 1]] + I = [[13, 9], [9, 20]],
//   b = 3 y0 + 6 y2 = (3, 6) + (0, 6) = (3, 12), det A = 260 - 81 = 179,
//   x = [[20, -9], [-9, 13]] (3, 12) / 179 = ((60 - 108), (-27 + 156)) / 179 = (-48, 129) / 179.
template <typename T, typename I>
void check_implicit() {
  const Csr<T, I> user_items(2, 3, {0, 2, 2}, {0, 2}, {1, 2});
  AlsOptions options;
  options.feedback = Feedback::implicit;
  options.confidence = Confidence::linear;
  options.alpha = 1.0;
  options.regularization = 1.0;
  check_half_step(user_items, options, {-23.0 / 107, 70.0 / 107, 0, 0});
  options.confidence = Confidence::scaled;
  options.alpha = 3.0;
  check_half_step(user_items, options, {-48.0 / 179, 129.0 / 179, 0, 0});
}

// iALS (Rendle et al. 2022): the same implicit user 0, linear confidence with alpha = 1
// (c_0 = 2, c_2 = 3), unobserved weight alpha0 = 0.5, lambda = 0.1 and exponent nu = 1:
//   lambda_0 = 0.1 (n_0 + alpha0 n_items) = 0.1 (2 + 0.5 * 3) = 0.35,
//   A = 0.5 Y^T Y + (2 - 0.5) y0 y0^T + (3 - 0.5) y2 y2^T + 0.35 I
//     = [[5, 2.5], [2.5, 3]] + [[1.5, 3], [3, 6]] + [[0, 0], [0, 2.5]] + 0.35 I = [[6.85, 5.5], [5.5, 11.85]],
//   b = (2, 7) as before, det A = 81.1725 - 30.25 = 50.9225,
//   x = [[11.85, -5.5], [-5.5, 6.85]] (2, 7) / det = (23.7 - 38.5, -11 + 47.95) / det = (-14.8, 36.95) / 50.9225.
// Explicit, lambda = 1, nu = 0.5 (lambda_u = lambda n_u^nu): user 0 has lambda sqrt(2) = s,
//   A = [[10 + s, 5], [5, 5 + s]], det A = (10 + s)(5 + s) - 25 = 27 + 15 s,
//   x = ((5 + s) 17 - 70, 14 (10 + s) - 85) / det = (15 + 17 s, 55 + 14 s) / (27 + 15 s);
//   user 1 has one rating: lambda 1, x = (0, 1.5) as before.
template <typename T, typename I>
void check_ials() {
  const Csr<T, I> user_items(2, 3, {0, 2, 2}, {0, 2}, {1, 2});
  AlsOptions options;
  options.alpha = 1.0;
  options.regularization = 0.1;
  options.unobserved_weight = 0.5;
  options.regularization_exponent = 1.0;
  check_half_step(user_items, options, {-14.8 / 50.9225, 36.95 / 50.9225, 0, 0});

  const Csr<T, I> ratings(3, 3, {0, 2, 3, 3}, {0, 1, 2}, {5, 4, 3});
  AlsOptions explicit_options;
  explicit_options.feedback = Feedback::explicit_ratings;
  explicit_options.regularization = 1.0;
  explicit_options.regularization_exponent = 0.5;
  const double s = std::sqrt(2.0);
  check_half_step(ratings, explicit_options, {(15 + 17 * s) / (27 + 15 * s), (55 + 14 * s) / (27 + 15 * s), 0, 1.5,
                                              0, 0});
}

}  // namespace

RECORE_TEST(als_gram_matrix_by_hand) {
  const Dense<float> items = hand_items<float>();
  Dense<float> gram(2, 2);
  recore::gram_matrix<float>(items.view(), gram.mutable_view(), 1);
  CHECK(gram.values == hand_items_gram<float>().values);

  // Chunks {y0} and {y1, y2}: y0 y0^T = [[1, 2], [2, 4]] and y1 y1^T + y2 y2^T = [[9, 3], [3, 2]],
  // which fold to the whole Gram matrix.
  const int64_t bounds[] = {0, 1, 3};
  std::vector<float> partials(2 * 4);
  recore::gram_partials<float>(items.view(), bounds, 2, partials.data(), 1);
  CHECK(partials == (std::vector<float>{1, 2, 2, 4, 9, 3, 3, 2}));
  Dense<float> folded(2, 2);
  recore::gram_fold<float>(partials.data(), 2, folded.mutable_view());
  CHECK(folded.values == gram.values);
}

RECORE_TEST(als_explicit_by_hand) {
  check_explicit<float, int32_t>();
  check_explicit<double, int32_t>();
  check_explicit<float, int64_t>();
}

RECORE_TEST(als_implicit_by_hand) {
  check_implicit<float, int32_t>();
  check_implicit<double, int32_t>();
  check_implicit<double, int64_t>();
}

RECORE_TEST(als_ials_by_hand) {
  check_ials<float, int32_t>();
  check_ials<double, int32_t>();
  check_ials<double, int64_t>();
}

// The objective at fixed factors, lambda = 0.5, users x_0 = (1, -1), x_1 = (0.5, 0.5), the hand
// items, user 0 holding item 0 (value 1) and item 2 (value 2), user 1 nothing.
// Scores x_0 . y_i = (-1, 2, -1), x_1 . y_i = (1.5, 2, 0.5).
// Regularization: lambda (|x_0|^2 + |x_1|^2 + |y0|^2 + |y1|^2 + |y2|^2) = 0.5 (2 + 0.5 + 5 + 10 + 1) = 9.25.
// Implicit, linear, alpha = 1 (c = 2 and 3, preference 1 on the stored entries, else c = 1, p = 0):
//   user 0: 2 (1 - (-1))^2 + (0 - 2)^2 + 3 (1 - (-1))^2 = 8 + 4 + 12 = 24
//   user 1: 1.5^2 + 2^2 + 0.5^2 = 6.5;  total 24 + 6.5 + 9.25 = 39.75.
// Implicit, scaled, alpha = 1 (c = 1 and 2): user 0: 4 + 4 + 8 = 16; total 16 + 6.5 + 9.25 = 31.75.
// Explicit (stored entries only): (1 - (-1))^2 + (2 - (-1))^2 = 13; total 13 + 9.25 = 22.25.
// Explicit, weighted regularization (each row and column weighted by its count: user 0 by 2,
//   user 1 by 0, items 0 and 2 by 1, item 1 by 0): 0.5 (2 * 2 + 5 + 1) = 5; total 13 + 5 = 18.
RECORE_TEST(als_loss_by_hand) {
  const Csr<float, int32_t> user_items(2, 3, {0, 2, 2}, {0, 2}, {1, 2});
  const Dense<float> users(2, 2, {1, -1, 0.5f, 0.5f});
  const Dense<float> items = hand_items<float>();
  const Dense<float> gram = hand_items_gram<float>();
  AlsOptions o;
  o.regularization = 0.5;
  o.alpha = 1.0;
  o.feedback = Feedback::implicit;
  o.confidence = Confidence::linear;
  CHECK_NEAR(recore::als_loss(user_items.view(), users.view(), items.view(), gram.view(), o), 39.75, 1e-12);
  o.confidence = Confidence::scaled;
  CHECK_NEAR(recore::als_loss(user_items.view(), users.view(), items.view(), gram.view(), o), 31.75, 1e-12);
  o.feedback = Feedback::explicit_ratings;
  CHECK_NEAR(recore::als_loss(user_items.view(), users.view(), items.view(), MatrixView<const float>{}, o), 22.25,
             1e-12);
  o.weighted_regularization = true;
  CHECK_NEAR(recore::als_loss(user_items.view(), users.view(), items.view(), MatrixView<const float>{}, o), 18.0,
             1e-12);
  // iALS: implicit, linear, alpha = 1, unobserved weight 0.5, exponent 1 (lambda = 0.5):
  //   user 0: 2 (1 + 1)^2 + 0.5 (2)^2 + 3 (1 + 1)^2 = 8 + 2 + 12 = 22, lambda_0 = 0.5 (2 + 0.5 * 3) = 1.75,
  //           penalty 1.75 * 2 = 3.5;
  //   user 1: 0.5 * 6.5 = 3.25, lambda_1 = 0.5 (0 + 1.5) = 0.75, penalty 0.75 * 0.5 = 0.375;
  //   items (n_users = 2): lambda = 0.5 (n_i + 1) = 1, 0.5, 1 for counts 1, 0, 1: 1 * 5 + 0.5 * 10 + 1 * 1 = 11;
  //   total 22 + 3.25 + 3.5 + 0.375 + 11 = 40.125; without the items' penalty 29.125.
  o.feedback = Feedback::implicit;
  o.confidence = Confidence::linear;
  o.weighted_regularization = false;
  o.unobserved_weight = 0.5;
  o.regularization_exponent = 1.0;
  CHECK_NEAR(recore::als_loss(user_items.view(), users.view(), items.view(), gram.view(), o), 40.125, 1e-12);
  CHECK_NEAR(recore::als_loss(user_items.view(), users.view(), items.view(), gram.view(), o, false), 29.125, 1e-12);
  const int64_t item_counts[] = {1, 0, 1};
  CHECK_NEAR(recore::als_regularization(items.view(), item_counts, 2, o), 11.0, 1e-12);
}

RECORE_TEST(als_refuses_inconsistent_arguments) {
  const Csr<float, int32_t> user_items(2, 3, {0, 2, 2}, {0, 2}, {1, 2});
  const Dense<float> items = hand_items<float>();
  const Dense<float> gram = hand_items_gram<float>();
  Dense<float> users(2, 2);
  AlsOptions o;
  o.regularization = -1.0;
  CHECK_THROWS(std::invalid_argument,
               recore::als_solve(user_items.view(), items.view(), gram.view(), users.mutable_view(), o));
  o.regularization = 0.1;
  o.cg_steps = 0;
  CHECK_THROWS(std::invalid_argument,
               recore::als_solve(user_items.view(), items.view(), gram.view(), users.mutable_view(), o));
  o.cg_steps = 3;
  Dense<float> too_few_users(1, 2);
  CHECK_THROWS(std::invalid_argument,
               recore::als_solve(user_items.view(), items.view(), gram.view(), too_few_users.mutable_view(), o));
  // Implicit feedback needs the Gram matrix.
  CHECK_THROWS(std::invalid_argument, recore::als_solve(user_items.view(), items.view(), MatrixView<const float>{},
                                                        users.mutable_view(), o));
  // The iALS options: finite and >= 0, blocks and sweeps >= 1, no unobserved weight for
  // explicit feedback, and one scaling of the regularization by the count at a time.
  const auto refused = [&](const AlsOptions& bad) {
    CHECK_THROWS(std::invalid_argument,
                 recore::als_solve(user_items.view(), items.view(), gram.view(), users.mutable_view(), bad));
  };
  AlsOptions bad = o;
  bad.unobserved_weight = -0.5;
  refused(bad);
  bad = o;
  bad.regularization_exponent = std::nan("");
  refused(bad);
  bad = o;
  bad.block_size = 0;
  refused(bad);
  bad = o;
  bad.subspace_sweeps = 0;
  refused(bad);
  bad = o;
  bad.feedback = Feedback::explicit_ratings;
  bad.unobserved_weight = 2.0;
  refused(bad);
  bad = o;
  bad.weighted_regularization = true;
  bad.regularization_exponent = 0.5;
  refused(bad);
}

namespace {

// One half-step and the loss of a random problem with num_threads threads.
template <typename T>
struct ThreadRun {
  std::vector<T> gram;
  std::vector<T> users;
  double loss = 0;
};

template <typename T>
ThreadRun<T> run_with_threads(const Csr<T, int32_t>& user_items, const Dense<T>& items, const Dense<T>& start,
                              AlsOptions options, int num_threads) {
  options.num_threads = num_threads;
  ThreadRun<T> run;
  Dense<T> gram(items.cols, items.cols);
  recore::gram_matrix<T>(items.view(), gram.mutable_view(), num_threads);
  Dense<T> users = start;
  recore::als_solve<T, int32_t>(user_items.view(), items.view(), gram.view(), users.mutable_view(), options);
  run.loss = recore::als_loss<T, int32_t>(user_items.view(), users.view(), items.view(), gram.view(), options);
  run.gram = gram.values;
  run.users = users.values;
  return run;
}

template <typename T>
void check_thread_invariance() {
  // 1100 item rows make three Gram chunks (of at least 512 rows each): the chunk sums must be
  // added in the same order whichever threads computed them.
  const Csr<T, int32_t> user_items = recore::testing::random_csr<T, int32_t>(300, 1100, 30, 17);
  const Dense<T> items = recore::testing::random_dense<T>(1100, 20, 0.3, 5);
  const Dense<T> start = recore::testing::random_dense<T>(300, 20, 0.3, 6);
  struct Variant {
    Feedback feedback;
    Solver solver;
    bool weighted;
    CgPath path;
    double exponent;
  };
  const Variant variants[] = {
      {Feedback::implicit, Solver::conjugate_gradient, false, CgPath::gathered, 0.0},
      {Feedback::implicit, Solver::conjugate_gradient, false, CgPath::blocked, 0.0},
      {Feedback::implicit, Solver::cholesky, false, CgPath::gathered, 0.0},
      {Feedback::explicit_ratings, Solver::conjugate_gradient, true, CgPath::in_place, 0.0},
      {Feedback::explicit_ratings, Solver::cholesky, true, CgPath::gathered, 0.0},
      {Feedback::implicit, Solver::subspace, false, CgPath::gathered, 0.5},
      {Feedback::implicit, Solver::subspace, false, CgPath::in_place, 0.5},
      {Feedback::explicit_ratings, Solver::subspace, false, CgPath::gathered, 1.0},
  };
  for (const Variant& v : variants) {
    CgPathScope scope(v.path, 128);
    AlsOptions o;
    o.feedback = v.feedback;
    o.solver = v.solver;
    o.weighted_regularization = v.weighted;
    o.regularization_exponent = v.exponent;
    o.unobserved_weight = v.feedback == Feedback::implicit && v.exponent != 0.0 ? 0.3 : 1.0;
    o.block_size = 7;
    o.regularization = 0.05;
    o.alpha = 2.0;
    const ThreadRun<T> one = run_with_threads(user_items, items, start, o, 1);
    for (int threads : {2, 3}) {
      const ThreadRun<T> many = run_with_threads(user_items, items, start, o, threads);
      CHECK(recore::testing::same_bits(one.gram.data(), many.gram.data(), int64_t(one.gram.size())));
      CHECK(recore::testing::same_bits(one.users.data(), many.users.data(), int64_t(one.users.size())));
      CHECK(recore::testing::same_bits(&one.loss, &many.loss, 1));
    }
    // The solve did something: the factors moved away from the start.
    CHECK(!recore::testing::same_bits(one.users.data(), start.values.data(), int64_t(one.users.size())));
  }
}

}  // namespace

RECORE_TEST(als_bitwise_for_any_thread_count) {
  check_thread_invariance<float>();
  check_thread_invariance<double>();
}
