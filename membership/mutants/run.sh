#!/usr/bin/env bash
# Runs the curated mutants of membership/mutants/mutants.txt, each in a scratch copy of the
# repository (never in the working tree), and prints a table: mutant, what caught it.
#
#   membership/mutants/run.sh                 # every mutant
#   membership/mutants/run.sh NAME...         # only these
#   MUTANT_SOAK=20000 membership/mutants/run.sh   # survivors also get a soak of that many seeds
#   MUTANT_STAGES=sim membership/mutants/run.sh     # only the sim stage (a survivor is then
#                                                   # "survived sim", the other stages not run)
#
# Per mutant, the stages run in order and the first failing one is "what caught it":
#   sim   cargo test -p concord-membership --test sim   (seeds 0..2000 of both families, the
#         default range of `cargo test`; the seeds of known-failures.txt count only when they fail
#         differently; collection stops at CONCORD_SIM_MAX_FAILURES, default 100, which must stay
#         above the number of listed seeds or a mutant is tested on a short range)
#   lib   cargo test -p concord-membership --lib        (unit tests, the Engine's validate())
#   tests cargo test -p concord-membership --tests      (scenarios, version, wire)
#   soak  CONCORD_SIM_SEEDS=$MUTANT_SOAK from seed 2000, release (only with MUTANT_SOAK)
# A mutant whose text is not found exactly once is "stale" (the code changed; fix the entry).
# A mutant that does not compile is "compile error" (fix the entry: it tests nothing).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
list="$repo/membership/mutants/mutants.txt"
work="${MUTANT_WORK:-${TMPDIR:-/tmp}/concord-mutants}"
mkdir -p "$work"
scratch="$work/src"
export CARGO_TARGET_DIR="$work/target"
export CARGO_TERM_COLOR=never
log="$work/logs"
mkdir -p "$log"

# Fresh scratch copy of the tracked files (no target/, no untracked build output).
rm -rf "$scratch"
mkdir -p "$scratch"
git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 cp --parents -t "$scratch")

# Parse the list into name / file / find / replace files under $work/m/NAME/.
rm -rf "$work/m"
perl -e '
  my ($list, $out) = @ARGV;
  open my $fh, "<", $list or die "$list: $!";
  my ($name, $key, %e);
  my $flush = sub {
    return unless defined $name;
    mkdir "$out/$name" or die "mutant $name twice in the list\n";
    for my $k (qw(file find replace rule)) {
      die "mutant $name has no $k\n" unless defined $e{$k};
      open my $o, ">", "$out/$name/$k" or die; print $o $e{$k}; close $o;
    }
  };
  mkdir $out;
  while (my $l = <$fh>) {
    chomp $l;
    if ($l =~ /^== (\S+)\s*$/) { $flush->(); $name = $1; %e = (); $key = undef; next }
    next if !defined $name || (!defined $key && ($l =~ /^#/ || $l eq ""));
    if ($l =~ /^(file|find|replace|rule): ?(.*)$/) { $key = $1; $e{$key} = $2; next }
    if ($l eq "" ) { $key = undef; next }
    die "line \"$l\" of mutant $name belongs to no key\n" unless defined $key;
    $e{$key} .= "\n$l";
  }
  $flush->();
' "$list" "$work/m"

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  mapfile -t names < <(grep -E '^== ' "$list" | sed 's/^== //')
fi

# apply FILE FIND REPLACE -> 0 applied, 3 not found or not unique
apply() {
  perl -e '
    my ($path, $find, $repl) = @ARGV;
    local $/; open my $f, "<", $path or exit 3; my $s = <$f>; close $f;
    my $n = () = $s =~ /\Q$find\E/g;
    exit 3 if $n != 1;
    $s =~ s/\Q$find\E/$repl/;
    open my $o, ">", $path or die; print $o $s; close $o;
  ' "$1" "$(cat "$2")" "$(cat "$3")"
}

stage() { # NAME LOGFILE CMD... -> 0 passed, 1 failed
  local what="$1" out="$2"; shift 2
  if (cd "$scratch" && timeout 900 "$@") >"$out" 2>&1; then return 0; fi
  return 1
}

# What a sim log's failures were, per family: "Base: epoch-decision 12 (first seed 3)".
sim_verdict() {
  local v
  v=$(perl -ne '
    if (/^\d+ of \d+ (\w+)-family seeds failed/) { print "; " if $n++; print "$1:"; $k = 0 }
    elsif (/^  ([a-z-]+): (\d+) seeds, first \[(\d+)/) { print "," if $k++; print " $1 $2 (first seed $3)" }
  ' "$1" || true)
  if [ -n "$v" ]; then
    echo "$v"
  else
    echo "$(grep -oE '^(test )?[a-z_]+ (\.\.\.|---) FAILED' "$1" | sed -E 's/^(test )?([a-z_]+) .*/\2/' | tr '\n' ' ' || true)"
  fi
}

# The failing tests named in a cargo test log.
failed_tests() {
  grep -oE '^    [a-z_:]+$' "$1" | head -3 | tr -d ' ' | tr '\n' ' ' || true
}

results=()
for name in "${names[@]}"; do
  d="$work/m/$name"
  [ -d "$d" ] || { echo "no mutant named $name" >&2; exit 2; }
  file="$scratch/$(cat "$d/file")"
  cp "$file" "$work/orig"
  t0=$(date +%s)
  verdict=""
  if ! apply "$file" "$d/find" "$d/replace"; then
    verdict="stale (text not found exactly once)"
  elif ! (cd "$scratch" && cargo build -q -p concord-membership --tests) >"$log/$name.build" 2>&1; then
    verdict="compile error (see $log/$name.build)"
  elif ! stage sim "$log/$name.sim" cargo test -q -p concord-membership --test sim; then
    verdict="sim: $(sim_verdict "$log/$name.sim")"
  elif [ "${MUTANT_STAGES:-all}" = sim ]; then
    verdict="SURVIVED sim (lib and integration tests not run)"
  elif ! stage lib "$log/$name.lib" cargo test -q -p concord-membership --lib; then
    verdict="lib: $(failed_tests "$log/$name.lib")"
  elif ! stage tests "$log/$name.tests" cargo test -q -p concord-membership --tests; then
    verdict="tests: $(failed_tests "$log/$name.tests")"
  elif [ -n "${MUTANT_SOAK:-}" ] && ! stage soak "$log/$name.soak" env CONCORD_SIM_SEED_START=2000 CONCORD_SIM_SEEDS="$MUTANT_SOAK" cargo test -q --release -p concord-membership --test sim; then
    verdict="soak of $MUTANT_SOAK seeds: $(sim_verdict "$log/$name.soak")"
  else
    verdict="SURVIVED"
  fi
  cp "$work/orig" "$file"
  line=$(printf '| %s | %s | %ss |' "$name" "$verdict" "$(( $(date +%s) - t0 ))")
  echo "$line"
  results+=("$line")
done

echo
echo "| mutant | caught by | time |"
echo "|---|---|---|"
printf '%s\n' "${results[@]}"
survivors=$(printf '%s\n' "${results[@]}" | grep -c "SURVIVED" || true)
stale=$(printf '%s\n' "${results[@]}" | grep -c "| stale\|| compile error" || true)
echo
echo "${#results[@]} mutants: $(( ${#results[@]} - survivors - stale )) caught, $survivors survived, $stale stale or not compiling"
