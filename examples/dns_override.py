#!/usr/bin/env python3
"""A third-party chained CNI plugin written with pycni's SDK.

It sets the result's DNS settings from its own config, e.g.
    {"type": "dns-override", "nameservers": ["10.96.0.10"], "search": ["svc.local"]}
Install: put an executable named `dns-override` on CNI_PATH that runs this file.
"""

from pycni.skel import CmdArgs, Plugin
from pycni.spec import DNS, CNIError, ErrorCode, Result, versions_from

plugin = Plugin("dns-override", versions=versions_from("0.3.0"))


def wanted_dns(args: CmdArgs) -> DNS:
    conf = args.fields
    return DNS(conf.strings("nameservers"), conf.string("domain"), conf.strings("search"), conf.strings("options"))


@plugin.add
def add(args: CmdArgs) -> Result:
    result = args.prev_result()
    if result is None:
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG, "dns-override must be chained after a plugin that adds an interface"
        )
    result.dns = wanted_dns(args)
    return result


@plugin.check
def check(args: CmdArgs) -> None:
    result = args.prev_result()
    if result is None or result.dns != wanted_dns(args):
        raise CNIError(ErrorCode.INTERNAL, "DNS settings differ from the configured ones")


if __name__ == "__main__":
    plugin.main()
