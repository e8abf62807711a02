"""The scenario the examples test against, built with the mmemu API:
semantics.md section 13, S3 - a 64K mTHP written by P (pid 100), P forks
C (pid 101), C writes page 0 (a CoW copy of one page)."""
import mmemu

P, C = 100, 101


def fork_then_cow():
    s = mmemu.Scenario('fork-then-cow', memory='256M',
                       thp={'enabled': 'never', 'sizes': {'64K': 'always'}})
    s.process(P, comm='parent')
    s.mmap(P, 'buf', '64K', align='64K').write(P, 'buf')
    s.fork(P, C, comm='child').write(C, 'buf', offset=0, length='4K')
    return s


def keeps_page_mapcount(config):
    """CONFIG_PAGE_MAPCOUNT=y: the 'PAGE' column of semantics.md 13."""
    return mmemu.kernel_config(config).page_mapcount
