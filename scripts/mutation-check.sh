#!/usr/bin/env bash
# Proves the fault scenarios can fail: applies each deliberately broken
# change in scripts/mutations/*.patch to a scratch checkout of HEAD, runs
# the scenario named in the patch's file name map below, and succeeds only
# if that scenario FAILS on the broken build (a test that cannot fail
# proves nothing). Needs what scripts/test.sh needs (Redis, MongoDB).
#
#   scripts/mutation-check.sh            # every mutation
#   scripts/mutation-check.sh ack-before-store
#
# Builds into ./target/mutation: sharing ./target itself would let the
# broken crates' artefacts pass for the real ones (cargo does not tell two
# checkouts of one workspace apart).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# mutation name -> nextest filter of the scenario that must catch it
declare -A scenario=(
  [ack-before-store]='binary(e2e_real_backends) & test(kill_9)'
  [no-fence]='binary(fencing)'
  [claim-leaves-drone-in-pool]='binary(e2e_real_backends) & test(engines_join_die)'
  [no-announce]='binary(cluster) & test(announcements)'
  [no-drain]='binary(api) & test(every_oversized)'
  [no-fail-fast]='binary(api) & test(a_store_outage)'
  [readiness-follows-dependencies]='binary(api) & test(a_store_outage)'
  [servicebus-dead-letters-unlisted]='binary(e2e_real_backends) & test(listen_send)'
  [no-trace-propagation]='binary(otel) & test(one_request)'
  [fifo-dispatch]='binary(api) & test(expedited)'
  [claim-ignores-battery]='binary(api) & test(short_of_range)'
  [claim-ignores-payload]='binary(api) & test(too_heavy_for_the_free_drones)'
  [timers-not-indexed]='binary(api) & test(scheduled_pickups_start)'
  [deadline-not-watched]='binary(api) & test(deadline_that_cannot_be_met)'
  [normal-lane-first]='binary(api) & test(skip_a_backlog_in_the_queue)'
  [owner-scope-off]='binary(api) & test(owners_see_only_their_own)'
  [follow-ups-normal-lane]='binary(api) & test(skip_a_backlog_in_the_queue)'
  [no-live-limit]='binary(api) & test(past_the_live_limit)'
)
# cargo features a scenario needs
declare -A features=(
  [no-trace-propagation]='otel'
)

names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${!scenario[@]}")

status=0
for name in "${names[@]}"; do
  filter=${scenario[$name]:?unknown mutation $name}
  scratch=$(mktemp -d)
  trap 'git -C "$root" worktree remove --force "$scratch" 2>/dev/null || true' EXIT
  git worktree add -q --detach "$scratch" HEAD
  git -C "$scratch" apply "$root/scripts/mutations/$name.patch"
  echo "==> $name: running '$filter' on the broken build"
  log="$scratch/mutation.log"
  (cd "$scratch" && CARGO_TARGET_DIR="$root/target/mutation" \
    cargo nextest run -p dronedelivery-engine --no-fail-fast --features "${features[$name]:-}" \
      --success-output immediate --failure-output immediate -E "$filter") 2>&1 |
    tee "$log" || true
  # Caught only if a test ran and failed; a build or filter error proves
  # nothing either way.
  if grep -q '^ *FAIL \[' "$log"; then
    echo "==> $name: caught (the scenario failed, as it must)"
  elif grep -q '^ *PASS \[' "$log"; then
    echo "==> $name: NOT caught: the scenario passed on a broken build" >&2
    status=1
  else
    echo "==> $name: the scenario did not run" >&2
    status=1
  fi
  git worktree remove --force "$scratch"
done
exit $status
