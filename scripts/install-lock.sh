# Sourced by the scripts that install what the tests need (apt, pip, npm).
# The suite runs in several pytest workers, and each may reach the same install at once; apt,
# pip and npm must not run twice on one target, so every install holds this one lock.
#   with_install_lock fn [args]   run fn holding the lock; released when fn returns, so a server
#                                 the script then execs does not keep it
with_install_lock() {
    {
        flock 9
        "$@"
    } 9>"${TMPDIR:-/tmp}/httpay-install.lock"
}
