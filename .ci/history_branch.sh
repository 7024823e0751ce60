#!/usr/bin/env bash
# The fleet's history lives in a git branch (never a CI cache, which GitHub evicts after a week
# unused). This script is the only writer the workflows use:
#
#   .ci/history_branch.sh checkout DIR [BRANCH]      the branch as a worktree in DIR; when origin has
#                                                    no such branch yet, DIR starts it (an empty
#                                                    orphan branch: nothing of the project's tree)
#   .ci/history_branch.sh push DIR MESSAGE [BRANCH]  commit what DIR holds now and push it
#
# Run it inside the project's clone: the worktree shares its remote "origin" and the credentials
# actions/checkout configured. BRANCH defaults to infermatrix-history.
#
# Concurrent writers never lose each other's runs: a rejected push fetches the branch, rebases this
# one commit onto it and tries again, HISTORY_PUSH_ATTEMPTS times in all (default 8), pausing a
# random 0..HISTORY_PUSH_PAUSE_S x attempt seconds (default 3) so that racing writers spread out.
# Run files are named by time and commit and never rewritten, so the rebase adds files beside the
# other writer's; a real conflict (two writers changed one file, say one kind's durations) aborts
# the rebase and fails with the files named. Nothing is ever forced. Exit: 0 pushed (or nothing
# new), 1 still rejected after the last attempt, 2 usage, 3 a conflict.
set -euo pipefail

usage() { echo "usage: $0 checkout DIR [BRANCH] | push DIR MESSAGE [BRANCH]" >&2; exit 2; }

fetch_branch() {  # the remote branch as origin/BRANCH
  git fetch --quiet origin "+refs/heads/$1:refs/remotes/origin/$1"
}

checkout() {
  local dir=$1 branch=$2 rc=0
  git ls-remote --exit-code --heads origin "$branch" >/dev/null || rc=$?
  if [ "$rc" -eq 0 ]; then
    fetch_branch "$branch"
    git worktree add --quiet -B "$branch" "$dir" "origin/$branch"
    echo "history: $branch checked out in $dir at $(git -C "$dir" rev-parse --short HEAD)"
  elif [ "$rc" -eq 2 ]; then  # 2: origin answered and has no such branch (anything else is an error)
    git worktree add --quiet --detach "$dir"
    git -C "$dir" checkout --quiet --orphan "$branch"
    git -C "$dir" rm -r -f --quiet --ignore-unmatch .
    echo "history: origin has no branch $branch yet; $dir starts it (an empty orphan branch)"
  else
    echo "history: cannot list origin's branches (git ls-remote exit $rc)" >&2
    exit "$rc"
  fi
}

push() {
  local dir=$1 message=$2 branch=$3
  local attempts=${HISTORY_PUSH_ATTEMPTS:-8} pause=${HISTORY_PUSH_PAUSE_S:-3} attempt conflicted
  cd "$dir"
  # a CI runner has no git identity of its own
  export GIT_AUTHOR_NAME=${GIT_AUTHOR_NAME:-infermatrix} GIT_AUTHOR_EMAIL=${GIT_AUTHOR_EMAIL:-infermatrix@localhost}
  export GIT_COMMITTER_NAME=${GIT_COMMITTER_NAME:-$GIT_AUTHOR_NAME} GIT_COMMITTER_EMAIL=${GIT_COMMITTER_EMAIL:-$GIT_AUTHOR_EMAIL}
  git add --all .
  if git diff --cached --quiet; then
    echo "history: nothing new in $dir to push"
    return 0
  fi
  git commit --quiet -m "$message"
  for attempt in $(seq 1 "$attempts"); do
    if git push --quiet origin "HEAD:refs/heads/$branch"; then
      echo "history: pushed $(git rev-parse --short HEAD) to $branch (attempt $attempt of $attempts)"
      return 0
    fi
    if [ "$attempt" -eq "$attempts" ]; then
      break
    fi
    echo "history: push rejected (attempt $attempt of $attempts); fetching $branch and rebasing onto it"
    sleep $(( RANDOM % (pause * attempt + 1) ))
    if ! git ls-remote --exit-code --heads origin "$branch" >/dev/null; then
      continue  # the branch is still absent (or origin unreachable): nothing to rebase onto
    fi
    fetch_branch "$branch"
    if ! git rebase --quiet "origin/$branch"; then
      conflicted=$(git diff --name-only --diff-filter=U | tr '\n' ' ')
      git rebase --abort
      echo "history: another writer changed the same file(s): ${conflicted:-?}; nothing was pushed or forced" >&2
      return 3
    fi
  done
  echo "history: $branch still rejected the push after $attempts attempts; nothing was forced" >&2
  return 1
}

case "${1:-}" in
  checkout) [ $# -ge 2 ] || usage; checkout "$2" "${3:-infermatrix-history}" ;;
  push) [ $# -ge 3 ] || usage; push "$2" "$3" "${4:-infermatrix-history}" ;;
  *) usage ;;
esac
