"""The projectcalico.org/v3 kinds pycni stores, with Calico's field names, order, rules and defaults.

Field lists follow the Go structs (``api/pkg/apis/projectcalico/v3/*.go``,
``libcalico-go/lib/apis/internalapi/{node,workloadendpoint}.go``); rules follow
libcalico-go's validator and the CRDs' CEL rules; write-time defaults follow
clientv3 (``ippool.go`` ``validateAndSetDefaults``). Names of kinds, plurals
and calicoctl aliases are libcalico-go's ``model/resource.go`` and calicoctl's
``resourcemgr``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycni.fabric.calico.errors import ErroredField
from pycni.fabric.calico.resource import API_VERSION, NAME_LABEL, KindSpec, Resource, label_problem, name_problem
from pycni.fabric.calico.schema import (
    CIDR,
    IP,
    MAC,
    AnyJSON,
    ASNumber,
    Bool,
    Duration,
    Enum,
    Field,
    FieldType,
    Float,
    Int,
    IntChoice,
    Interface,
    IntOrString,
    ListOf,
    Selector,
    Str,
    StrMap,
    Struct,
)
from pycni.policy.endpoints import ALL_INTERFACES, failsafe_ports
from pycni.policy.nft_names import is_host_interface

ENCAP_MODES = ("Never", "Always", "CrossSubnet")
ALLOWED_USES = ("Workload", "Tunnel", "LoadBalancer")
LOG_SEVERITIES = ("Trace", "Debug", "Info", "Warning", "Error", "Fatal")
DEFAULT_AS_NUMBER = 64512
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}


def _name(text: str) -> str | None:
    return name_problem(text)


# -- IPPool ------------------------------------------------------------------

IPPOOL_SPEC = Struct(
    "IPPool.spec",
    [
        Field("cidr", Str(max_length=48)),
        Field("vxlanMode", Enum(*ENCAP_MODES)),
        Field("ipipMode", Enum(*ENCAP_MODES)),
        Field("natOutgoing", Bool()),
        Field("disabled", Bool()),
        Field("disableBGPExport", Bool()),
        Field("blockSize", Int(0, 128)),
        Field("nodeSelector", Selector(allow_global=False)),
        Field("namespaceSelector", Selector(allow_global=False)),
        Field("allowedUses", ListOf(Enum(*ALLOWED_USES), max_items=10)),
        Field("assignmentMode", Enum("Automatic", "Manual"), omit="absent"),
    ],
)


def pool_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network a pool CIDR names (host bits allowed here; validation reports them), or None."""
    try:
        return ipaddress.ip_interface(cidr).network
    except ValueError:
        return None


def default_ippool(pool: Resource) -> None:
    """clientv3's write-time defaults: normalised CIDR, blockSize, all(), Never modes, uses, Automatic."""
    spec = pool.spec
    network = pool_network(str(spec.get("cidr", "")))
    defaults: dict[str, Any] = {
        "vxlanMode": "Never",
        "ipipMode": "Never",
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
    }
    if network is not None:
        defaults["blockSize"] = DEFAULT_BLOCK_SIZE[network.version]
    for key, value in defaults.items():
        if not spec.get(key):
            spec[key] = value
    pool.spec = {f.name: spec[f.name] for f in IPPOOL_SPEC.fields if f.name in spec}


def validate_ippool(pool: Resource) -> list[ErroredField]:
    spec, errors = pool.spec, []
    cidr = str(spec.get("cidr", ""))
    if not cidr:
        return [ErroredField("IPPool.spec.cidr", "IPPool CIDR must be specified")]
    try:
        interface = ipaddress.ip_interface(cidr)
    except ValueError:
        return [ErroredField("IPPool.spec.cidr", "IPPool CIDR must be a valid subnet such as 10.244.0.0/16", cidr)]
    network, version = interface.network, interface.version
    if interface.ip != network.network_address:
        errors.append(
            ErroredField("IPPool.spec.cidr", f"IP pool CIDR is not strictly masked (did you mean {network}?)", cidr)
        )
    link_local = ipaddress.ip_network("169.254.0.0/16" if version == 4 else "fe80::/10")
    if network.overlaps(link_local):
        errors.append(
            ErroredField("IPPool.spec.cidr", f"IPPool CIDR overlaps with link local range {link_local}", cidr)
        )
    block_size = int(spec.get("blockSize") or DEFAULT_BLOCK_SIZE[version])
    low, high = BLOCK_SIZE_RANGE[version]
    if spec.get("blockSize") and not low <= block_size <= high:
        errors.append(
            ErroredField(
                "IPPool.spec.blockSize",
                "blockSize must be between 20 and 32 for IPv4 pools, and between 116 and 128 for IPv6 pools",
                block_size,
            )
        )
    elif network.prefixlen > block_size and not spec.get("disabled"):
        errors.append(
            ErroredField(
                "IPPool.spec.cidr",
                f"IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block "
                f"size (/{network.prefixlen} is smaller than blocks of /{block_size})",
                cidr,
            )
        )
    ipip, vxlan = spec.get("ipipMode") or "Never", spec.get("vxlanMode") or "Never"
    if ipip != "Never" and vxlan != "Never":
        errors.append(
            ErroredField("IPPool.spec", "ipipMode and vxlanMode cannot both be enabled: set one of them to Never")
        )
    if version == 6 and ipip != "Never":
        errors.append(ErroredField("IPPool.spec.ipipMode", "IPIP is not supported on IPv6 pools", ipip))
    uses = list(spec.get("allowedUses") or [])
    if "LoadBalancer" in uses:
        if "Workload" in uses or "Tunnel" in uses:
            errors.append(
                ErroredField("IPPool.spec.allowedUses", "LoadBalancer cannot be combined with Workload or Tunnel", uses)
            )
        if ipip != "Never" or vxlan != "Never":
            errors.append(ErroredField("IPPool.spec", "LoadBalancer IP pool cannot have IPIP or VXLAN enabled"))
        if spec.get("disableBGPExport"):
            errors.append(
                ErroredField("IPPool.spec.disableBGPExport", "LoadBalancer IP pools cannot disable BGP export")
            )
        if spec.get("nodeSelector", "all()") != "all()":
            errors.append(
                ErroredField("IPPool.spec.nodeSelector", "IP Pool with AllowedUse LoadBalancer must have all()")
            )
    if "Tunnel" in uses and spec.get("namespaceSelector"):
        errors.append(
            ErroredField(
                "IPPool.spec.namespaceSelector", "IP Pool with AllowedUse Tunnel cannot have namespaceSelector"
            )
        )
    return errors


# -- IPAMConfiguration -------------------------------------------------------

IPAMCONFIG_SPEC = Struct(
    "IPAMConfiguration.spec",
    [
        Field("strictAffinity", Bool(), omit="never", default=False),
        Field("maxBlocksPerHost", Int(0, 1_000_000)),
        Field("autoAllocateBlocks", Bool(), omit="never", default=True),
        Field("kubeVirtVMAddressPersistence", Enum("Enabled", "Disabled"), omit="absent"),
        Field("ipCooldownSeconds", Int(0, 1200)),
    ],
)


def validate_ipamconfig(config: Resource) -> list[ErroredField]:
    """SetIPAMConfig's rules: something must allocate; a block cap only makes sense without borrowing."""
    spec, errors = config.spec, []
    if not spec.get("strictAffinity") and not spec.get("autoAllocateBlocks"):
        errors.append(
            ErroredField(
                "IPAMConfiguration.spec", "Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time"
            )
        )
    if spec.get("maxBlocksPerHost") and not spec.get("strictAffinity"):
        errors.append(
            ErroredField(
                "IPAMConfiguration.spec.maxBlocksPerHost", "MaxBlocksPerHost requires StrictAffinity to be enabled"
            )
        )
    return errors


# -- BGPConfiguration --------------------------------------------------------

_CIDR_BLOCK = Struct("cidr block", [Field("cidr", CIDR())])
_SECRET_REF = Struct(
    "password",
    [
        Field(
            "secretKeyRef",
            Struct(
                "secretKeyRef", [Field("name", Str()), Field("key", Str()), Field("optional", Bool(), omit="absent")]
            ),
            omit="absent",
        )
    ],
)

BGPCONFIG_SPEC = Struct(
    "BGPConfiguration.spec",
    [
        Field("logSeverityScreen", Enum(*LOG_SEVERITIES)),
        Field("nodeToNodeMeshEnabled", Bool(), omit="absent"),
        Field("asNumber", ASNumber(), omit="absent"),
        Field("serviceLoadBalancerIPs", ListOf(_CIDR_BLOCK)),
        Field("serviceExternalIPs", ListOf(_CIDR_BLOCK)),
        Field("serviceClusterIPs", ListOf(_CIDR_BLOCK)),
        Field("serviceLoadBalancerAggregation", Enum("Enabled", "Disabled"), omit="absent"),
        Field("communities", ListOf(Struct("community", [Field("name", Str()), Field("value", Str())]))),
        Field(
            "prefixAdvertisements",
            ListOf(Struct("prefixAdvertisement", [Field("cidr", CIDR()), Field("communities", ListOf(Str()))])),
        ),
        Field("listenPort", Int(1, 65535)),
        Field("nodeMeshPassword", _SECRET_REF, omit="absent"),
        Field("nodeMeshMaxRestartTime", Duration(), omit="absent"),
        Field("bindMode", Enum("None", "NodeIP"), omit="absent"),
        Field("ignoredInterfaces", ListOf(Str())),
        Field("localWorkloadPeeringIPV4", IP(4)),
        Field("localWorkloadPeeringIPV6", IP(6)),
        Field("programClusterRoutes", Str(), omit="absent"),
        Field("ipv4NormalRoutePriority", Int(1, 2147483646), omit="absent"),
        Field("ipv6NormalRoutePriority", Int(1, 2147483646), omit="absent"),
    ],
)

_DEFAULT_ONLY = (
    "nodeToNodeMeshEnabled",
    "asNumber",
    "serviceLoadBalancerIPs",
    "serviceExternalIPs",
    "serviceClusterIPs",
    "nodeMeshPassword",
    "nodeMeshMaxRestartTime",
)


def validate_bgpconfig(config: Resource) -> list[ErroredField]:
    """Cluster-wide BGP settings may only be set on the ``default`` BGPConfiguration (``node.<name>`` is per node)."""
    if config.name == "default":
        return []
    return [
        ErroredField(f"BGPConfiguration.spec.{key}", f"Cannot set {key} on a non default BGP Configuration.")
        for key in _DEFAULT_ONLY
        if config.spec.get(key) not in (None, [])
    ]


# -- BGPPeer -----------------------------------------------------------------


def split_ip_port(text: str) -> tuple[str, int | None] | None:
    """``10.0.0.1``, ``10.0.0.1:179``, ``fd00::1`` or ``[fd00::1]:179`` -> (ip, port); None if invalid."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if not rest.startswith(":") or not rest[1:].isdigit():
            return None
        port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        if not rest.isdigit():
            return None
        port = int(rest)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    if port is not None and not 0 < port < 65536:
        return None
    return host, port


BGPPEER_SPEC = Struct(
    "BGPPeer.spec",
    [
        Field("node", Str(_name, max_length=253)),
        Field("nodeSelector", Selector()),
        Field("peerIP", Str(lambda t: None if split_ip_port(t) else "must be an IP, or IP:port ([IPv6]:port)", 64)),
        Field("asNumber", ASNumber()),
        Field("localASNumber", ASNumber(), omit="absent"),
        Field("peerSelector", Selector()),
        Field("keepOriginalNextHop", Bool()),
        Field("nextHopMode", Enum("Auto", "Self", "Keep"), omit="absent"),
        Field("password", _SECRET_REF, omit="absent"),
        Field("sourceAddress", Enum("UseNodeIP", "None")),
        Field("maxRestartTime", Duration(), omit="absent"),
        Field("keepaliveTime", Duration(), omit="absent"),
        Field("numAllowedLocalASNumbers", Int(0, 2**31 - 1), omit="absent"),
        Field("ttlSecurity", Int(0, 255), omit="absent"),
        Field("reachableBy", IP()),
        Field("filters", ListOf(Str(_name))),
        Field("localWorkloadSelector", Selector()),
        Field("reversePeering", Enum("Auto", "Manual"), omit="absent"),
    ],
)


def validate_bgppeer(peer: Resource) -> list[ErroredField]:
    spec, errors = peer.spec, []
    if spec.get("node") and spec.get("nodeSelector"):
        errors.append(ErroredField("BGPPeer.spec", "node and nodeSelector cannot both be set: choose one"))
    if spec.get("peerIP") and spec.get("peerSelector"):
        errors.append(ErroredField("BGPPeer.spec", "peerIP and peerSelector cannot both be set: choose one"))
    if spec.get("peerIP") and not spec.get("asNumber") and not spec.get("localWorkloadSelector"):
        errors.append(ErroredField("BGPPeer.spec.asNumber", "asNumber must be set when peerIP is set"))
    reachable, peer_ip = spec.get("reachableBy"), split_ip_port(str(spec.get("peerIP", "")))
    if reachable and peer_ip and ipaddress.ip_address(reachable).version != ipaddress.ip_address(peer_ip[0]).version:
        errors.append(ErroredField("BGPPeer.spec.reachableBy", "ReachableBy and PeerIP address family mismatched"))
    return errors


# -- Node --------------------------------------------------------------------

NODE_SPEC = Struct(
    "Node.spec",
    [
        Field(
            "bgp",
            Struct(
                "Node.spec.bgp",
                [
                    Field("asNumber", ASNumber(), omit="absent"),
                    Field("ipv4Address", CIDR(4)),
                    Field("ipv6Address", CIDR(6)),
                    Field("ipv4IPIPTunnelAddr", IP(4)),
                    Field("routeReflectorClusterID", IP(4)),
                ],
            ),
            omit="absent",
        ),
        Field("ipv4VXLANTunnelAddr", IP(4)),
        Field("vxlanTunnelMACAddr", MAC()),
        Field("ipv6VXLANTunnelAddr", IP(6)),
        Field("vxlanTunnelMACAddrV6", MAC()),
        Field(
            "orchRefs",
            ListOf(Struct("orchRef", [Field("nodeName", Str()), Field("orchestrator", Str(), omit="never")])),
        ),
        Field(
            "wireguard",
            Struct("wireguard", [Field("interfaceIPv4Address", IP(4)), Field("interfaceIPv6Address", IP(6))]),
            omit="absent",
        ),
        Field(
            "addresses",
            ListOf(
                Struct(
                    "address",
                    [
                        Field("address", CIDR(), omit="never"),
                        Field("type", Enum("CalicoNodeIP", "InternalIP", "ExternalIP")),
                    ],
                )
            ),
        ),
        Field("interfaces", ListOf(Struct("interface", [Field("name", Str()), Field("addresses", ListOf(Str()))]))),
    ],
)
NODE_STATUS = Struct(
    "Node.status",
    [
        Field("wireguardPublicKey", Str()),
        Field("wireguardPublicKeyV6", Str()),
        Field("podCIDRs", ListOf(Str())),
    ],
)


def validate_node(node: Resource) -> list[ErroredField]:
    if "bgp" in node.spec and not node.spec["bgp"]:
        return [ErroredField("Node.spec.bgp", "Spec.BGP should not be empty: give ipv4Address or ipv6Address")]
    return []


# -- FelixConfiguration ------------------------------------------------------

# Every FelixConfigurationSpec field in Go's order (felixconfig.go); the ones pycni's agent reads are typed
# precisely below, the rest by their Go type so a real manifest round-trips.
_FELIX_FIELDS = (
    "nodeSelector:str useInternalDataplaneDriver:bool dataplaneDriver:str dataplaneWatchdogTimeout:duration "
    "ipv6Support:bool routeRefreshInterval:duration interfaceRefreshInterval:duration "
    "iptablesRefreshInterval:duration iptablesPostWriteCheckInterval:duration iptablesLockProbeInterval:duration "
    "featureDetectOverride:str featureGates:str ipsetsRefreshInterval:duration maxIpsetSize:int "
    "iptablesBackend:any xdpRefreshInterval:duration netlinkTimeout:duration metadataAddr:str metadataPort:int "
    "openstackRegion:str interfacePrefix:str interfaceExclude:str chainInsertMode:str "
    "defaultEndpointToHostAction:str iptablesFilterAllowAction:str iptablesMangleAllowAction:str "
    "iptablesFilterDenyAction:str logPrefix:str logActionRateLimit:str logActionRateLimitBurst:int logFilePath:str "
    "logSeverityFile:str logSeverityScreen:str logSeveritySys:str logDebugFilenameRegex:str ipipEnabled:bool "
    "ipipMTU:int vxlanEnabled:bool vxlanMTU:int vxlanMTUV6:int vxlanPort:int vxlanVNI:int "
    "allowVXLANPacketsFromWorkloads:bool allowIPIPPacketsFromWorkloads:bool reportingInterval:duration "
    "reportingTTL:duration endpointReportingEnabled:bool endpointReportingDelay:duration "
    "endpointStatusPathPrefix:str iptablesMarkMask:int disableConntrackInvalidCheck:bool healthEnabled:bool "
    "healthHost:str healthPort:int healthTimeoutOverrides:any prometheusMetricsEnabled:bool "
    "prometheusMetricsHost:str prometheusMetricsPort:int prometheusGoMetricsEnabled:bool "
    "prometheusProcessMetricsEnabled:bool prometheusWireGuardMetricsEnabled:bool prometheusMetricsCAFile:str "
    "prometheusMetricsCertFile:str prometheusMetricsKeyFile:str prometheusMetricsClientAuth:any "
    "failsafeInboundHostPorts:any failsafeOutboundHostPorts:any kubeNodePortRanges:any policySyncPathPrefix:str "
    "usageReportingEnabled:bool usageReportingInitialDelay:duration usageReportingInterval:duration "
    "natPortRange:any natOutgoingAddress:str natOutgoingExclusions:any deviceRouteSourceAddress:str "
    "deviceRouteSourceAddressIPv6:str deviceRouteProtocol:int removeExternalRoutes:bool programClusterRoutes:str "
    "ipForwarding:str externalNodesList:any debugMemoryProfilePath:str debugDisableLogDropping:bool "
    "debugSimulateCalcGraphHangAfter:duration debugSimulateDataplaneHangAfter:duration "
    "debugSimulateDataplaneApplyDelay:duration debugHost:str debugPort:int iptablesNATOutgoingInterfaceFilter:str "
    "sidecarAccelerationEnabled:bool xdpEnabled:bool genericXDPEnabled:bool nftablesMode:any "
    "nftablesFlowTableOffload:any nftablesFlowTableDataIfacePattern:str nftablesRefreshInterval:duration "
    "nftablesFilterAllowAction:str nftablesMangleAllowAction:str nftablesFilterDenyAction:str nftablesMarkMask:int "
    "bpfEnabled:bool bpfOverlayHostSourceIP:any bpfDisableUnprivileged:bool bpfJITHardening:any bpfLogLevel:str "
    "bpfConntrackLogLevel:str bpfConntrackMode:any bpfConntrackTimeouts:any bpfIPFragTimeout:duration "
    "bpfLogFilters:any bpfCTLBLogFilter:str bpfDataIfacePattern:str bpfL3IfacePattern:str "
    "bpfConnectTimeLoadBalancingEnabled:bool bpfConnectTimeLoadBalancing:any bpfHostNetworkedNATWithoutCTLB:any "
    "bpfExternalServiceMode:str bpfDSROptoutCIDRs:any bpfExtToServiceConnmark:int "
    "bpfKubeProxyIptablesCleanupEnabled:bool bpfKubeProxyMinSyncPeriod:duration bpfKubeProxyHealthzPort:int "
    "bpfPSNATPorts:any bpfMapSizeNATFrontend:int bpfMapSizeNATBackend:int bpfMapSizeNATAffinity:int "
    "bpfMapSizeRoute:int bpfMapSizeConntrack:int bpfMapSizePerCpuConntrack:int bpfMapSizeConntrackScaling:str "
    "bpfMapSizeConntrackCleanupQueue:int bpfMapSizeIPSets:int bpfMapSizeIfState:int bpfHostConntrackBypass:bool "
    "bpfIPFragmentReassemblyEnabled:bool bpfEnforceRPF:str bpfPolicyDebugEnabled:bool "
    "bpfForceTrackPacketsFromIfaces:any bpfDisableGROForIfaces:str bpfExcludeCIDRsFromNAT:any "
    "bpfExportBufferSizeMB:int istioAmbientMode:any istioDSCPMark:any cgroupV2Path:str "
    "flowLogsPolicyEvaluationMode:any bpfRedirectToPeer:str bpfAttachType:any flowLogsFlushInterval:duration "
    "flowLogsCollectorDebugTrace:bool flowLogsGoldmaneServer:str flowLogsLocalReporter:str bpfProfiling:str "
    "routeSource:str routeTableRanges:any routeTableRange:any routeSyncDisabled:bool ipv4NormalRoutePriority:int "
    "ipv4ElevatedRoutePriority:int ipv6NormalRoutePriority:int ipv6ElevatedRoutePriority:int "
    "liveMigrationRouteConvergenceTime:duration wireguardEnabled:bool wireguardEnabledV6:bool "
    "wireguardThreadingEnabled:bool wireguardListeningPort:int wireguardListeningPortV6:int "
    "wireguardRoutingRulePriority:int wireguardInterfaceName:str wireguardInterfaceNameV6:str wireguardMTU:int "
    "wireguardMTUV6:int wireguardHostEncryptionEnabled:bool wireguardKeepAlive:duration awsSrcDstCheck:any "
    "serviceLoopPrevention:str workloadSourceSpoofing:str mtuIfacePattern:str floatingIPs:any "
    "localSubnetL2Reachability:any localSubnetL2ReachabilityRefreshInterval:duration "
    "windowsManageFirewallRules:any goGCThreshold:int goMemoryLimitMB:int goMaxProcs:int requireMTUFile:bool "
    "bpfMaglevMaxEndpointsPerService:int bpfMaglevMaxServices:int"
)
# Go fields that are plain values (omitempty drops ""), the rest are pointers (kept whenever given).
_FELIX_VALUE_STRINGS = frozenset(
    [
        "dataplaneDriver",
        "featureDetectOverride",
        "featureGates",
        "metadataAddr",
        "openstackRegion",
        "interfacePrefix",
        "interfaceExclude",
        "chainInsertMode",
        "defaultEndpointToHostAction",
        "iptablesFilterAllowAction",
        "iptablesMangleAllowAction",
        "iptablesFilterDenyAction",
        "logPrefix",
        "logFilePath",
        "logSeverityFile",
        "logSeverityScreen",
        "logSeveritySys",
        "logDebugFilenameRegex",
        "endpointStatusPathPrefix",
        "prometheusMetricsHost",
        "policySyncPathPrefix",
        "natOutgoingAddress",
        "deviceRouteSourceAddress",
        "deviceRouteSourceAddressIPv6",
        "ipForwarding",
        "debugMemoryProfilePath",
        "iptablesNATOutgoingInterfaceFilter",
        "nftablesFlowTableDataIfacePattern",
        "nftablesFilterAllowAction",
        "nftablesMangleAllowAction",
        "nftablesFilterDenyAction",
        "bpfLogLevel",
        "bpfConntrackLogLevel",
        "bpfCTLBLogFilter",
        "bpfDataIfacePattern",
        "bpfL3IfacePattern",
        "bpfExternalServiceMode",
        "bpfMapSizeConntrackScaling",
        "bpfEnforceRPF",
        "bpfDisableGROForIfaces",
        "cgroupV2Path",
        "bpfRedirectToPeer",
        "bpfProfiling",
        "routeSource",
        "wireguardInterfaceName",
        "wireguardInterfaceNameV6",
        "serviceLoopPrevention",
        "workloadSourceSpoofing",
        "mtuIfacePattern",
    ]
)
_FELIX_PRECISE = {
    "vxlanVNI": Int(1, 16777215),
    "vxlanPort": Int(1, 65535),
    "vxlanMTU": Int(0, 65535),
    "vxlanMTUV6": Int(0, 65535),
    "ipipMTU": Int(0, 65535),
    "wireguardMTU": Int(0, 65535),
    "wireguardMTUV6": Int(0, 65535),
    "logSeverityScreen": Enum(*LOG_SEVERITIES),
    "logSeverityFile": Enum(*LOG_SEVERITIES),
    "logSeveritySys": Enum(*LOG_SEVERITIES),
    "nftablesMode": Enum("Enabled", "Disabled", "Auto"),
    "ipForwarding": Enum("Enabled", "Disabled"),
    "healthPort": Int(0, 65535),
    "prometheusMetricsPort": Int(0, 65535),
    "mtuIfacePattern": Str(),
    "defaultEndpointToHostAction": Enum("Drop", "Accept", "Return"),
}
_FELIX_TYPES: dict[str, Callable[[], FieldType]] = {
    "bool": Bool,
    "int": Int,
    "str": Str,
    "duration": Duration,
    "any": AnyJSON,
}


def _felix_fields() -> list[Field]:
    out = []
    for entry in _FELIX_FIELDS.split():
        name, kind = entry.split(":")
        type_ = _FELIX_PRECISE.get(name) or _FELIX_TYPES[kind]()
        out.append(Field(name, type_, omit="empty" if name in _FELIX_VALUE_STRINGS else "absent"))
    return out


FELIXCONFIG_SPEC = Struct("FelixConfiguration.spec", _felix_fields())


def validate_felixconfig(config: Resource) -> list[ErroredField]:
    """``validateProtoPort`` on the failsafe port lists: protocol TCP, UDP or SCTP, a port, an optional net."""
    errors = []
    for name in ("failsafeInboundHostPorts", "failsafeOutboundHostPorts"):
        value = config.spec.get(name)
        if value is None:
            continue
        try:
            failsafe_ports(value, (), name)
        except ValueError as exc:
            errors.append(ErroredField(f"FelixConfiguration.spec.{name}", str(exc).removeprefix(f"{name}: ")))
    return errors


# Felix's defaults for what pycni's node agent reads (felix/config/config_params.go).
FELIX_DEFAULTS: dict[str, Any] = {
    "vxlanVNI": 4096,
    "vxlanPort": 4789,
    "vxlanMTU": 0,
    "ipipMTU": 0,
    "nftablesMode": "Auto",
    "routeRefreshInterval": 90.0,  # seconds
    "mtuIfacePattern": r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)",
}


# -- WorkloadEndpoint --------------------------------------------------------

# EndpointPort: a named port of a workload or host endpoint (a workload's also carries its host port).
ENDPOINT_PORT_FIELDS = (
    Field("name", Str(), omit="never"),
    Field("protocol", IntOrString(), omit="never"),
    Field("port", Int(1, 65535), omit="never"),
)
WEP_SPEC = Struct(
    "WorkloadEndpoint.spec",
    [
        Field("orchestrator", Str(_name)),
        Field("workload", Str(_name)),
        Field("node", Str(_name)),
        Field("containerID", Str()),
        Field("pod", Str(_name)),
        Field("endpoint", Str(_name)),
        Field("serviceAccountName", Str()),
        Field("ipNetworks", ListOf(CIDR())),
        Field(
            "ipNATs",
            ListOf(Struct("ipNAT", [Field("internalIP", IP(), omit="never"), Field("externalIP", IP(), omit="never")])),
        ),
        Field("ipv4Gateway", IP(4)),
        Field("ipv6Gateway", IP(6)),
        Field("profiles", ListOf(Str())),
        Field("interfaceName", Interface()),
        Field("mac", MAC()),
        Field(
            "ports",
            ListOf(
                Struct(
                    "port",
                    [
                        *ENDPOINT_PORT_FIELDS,
                        Field("hostPort", Int(0, 65535), omit="never"),
                        Field("hostIP", Str(), omit="never"),
                    ],
                )
            ),
        ),
        Field("allowSpoofedSourcePrefixes", ListOf(CIDR())),
        Field("qosControls", AnyJSON(), omit="absent"),
    ],
)


def validate_wep(wep: Resource) -> list[ErroredField]:
    errors = []
    if not wep.spec.get("interfaceName"):
        errors.append(ErroredField("WorkloadEndpoint.spec.interfaceName", "required: the host-side interface name"))
    for index, net in enumerate(wep.spec.get("ipNetworks") or []):
        network = ipaddress.ip_interface(net).network
        if network.prefixlen != network.max_prefixlen:
            errors.append(
                ErroredField(
                    f"WorkloadEndpoint.spec.ipNetworks[{index}]", "IP network contains multiple addresses", net
                )
            )
    return errors


# -- HostEndpoint ------------------------------------------------------------

_INTERFACE = Interface()


def _host_interface(text: str) -> str | None:
    """An interface name of the host (not lo, not a workload's ``cali*``), or ``*`` (all of them)."""
    if text == ALL_INTERFACES:
        return None
    if not is_host_interface(text):
        return "must be an external interface of the host (lo and the workloads' cali* interfaces are not)"
    assert _INTERFACE.check is not None
    return _INTERFACE.check(text)


HEP_SPEC = Struct(
    "HostEndpoint.spec",
    [
        Field("node", Str(_name)),
        Field("interfaceName", Str(_host_interface)),
        Field("expectedIPs", ListOf(IP())),
        Field("profiles", ListOf(Str())),
        Field("ports", ListOf(Struct("port", list(ENDPOINT_PORT_FIELDS)))),
    ],
)


def validate_hep(hep: Resource) -> list[ErroredField]:
    """``validateHostEndpointSpec``: a node, and an interface or expected IPs."""
    errors = []
    if not hep.spec.get("node"):
        errors.append(ErroredField("HostEndpoint.spec.node", "node must be specified: the node the interface is on"))
    if not hep.spec.get("interfaceName") and not hep.spec.get("expectedIPs"):
        errors.append(
            ErroredField(
                "HostEndpoint.spec",
                "no interface or expected IPs have been specified: give interfaceName (or * for all) or expectedIPs",
            )
        )
    for index, port in enumerate(hep.spec.get("ports") or []):
        if not port.get("name"):
            errors.append(ErroredField(f"HostEndpoint.spec.ports[{index}].name", "required: a named port has a name"))
    return errors


# -- Profile, Tier, ClusterInformation ---------------------------------------

_ENTITY_RULE = Struct(
    "EntityRule",
    [
        Field("nets", ListOf(CIDR())),
        Field("selector", Selector()),
        Field("namespaceSelector", Selector()),
        Field("services", Struct("services", [Field("name", Str()), Field("namespace", Str())]), omit="absent"),
        Field("ports", ListOf(IntOrString())),
        Field("notNets", ListOf(CIDR())),
        Field("notSelector", Selector()),
        Field("notPorts", ListOf(IntOrString())),
        Field(
            "serviceAccounts",
            Struct("serviceAccounts", [Field("names", ListOf(Str())), Field("selector", Selector())]),
            omit="absent",
        ),
    ],
)
_ICMP = Struct("icmp", [Field("type", Int(0, 254), omit="absent"), Field("code", Int(0, 255), omit="absent")])
RULE = Struct(
    "Rule",
    [
        Field("action", Enum("Allow", "Deny", "Log", "Pass"), omit="never", required=True),
        Field("ipVersion", IntChoice(4, 6), omit="absent"),
        Field("protocol", IntOrString(), omit="absent"),
        Field("icmp", _ICMP, omit="absent"),
        Field("notProtocol", IntOrString(), omit="absent"),
        Field("notICMP", _ICMP, omit="absent"),
        # EntityRule values with omitempty: encoding/json never omits a struct, so an empty one is {}.
        Field("source", _ENTITY_RULE, omit="never"),
        Field("destination", _ENTITY_RULE, omit="never"),
        Field("http", AnyJSON(), omit="absent"),
        Field("metadata", Struct("metadata", [Field("annotations", StrMap())]), omit="absent"),
    ],
)

PROFILE_SPEC = Struct(
    "Profile.spec",
    [
        Field("ingress", ListOf(RULE, max_items=1024)),
        Field("egress", ListOf(RULE, max_items=1024)),
        Field("labelsToApply", StrMap(label_problem)),
    ],
)

TIER_SPEC = Struct(
    "Tier.spec",
    [Field("order", Float(), omit="absent"), Field("defaultAction", Enum("Deny", "Pass"), omit="absent")],
)
DEFAULT_TIER_ORDER = 1_000_000.0  # apiv3.DefaultTierOrder: a tier without an order sorts with the default tier
TIER_STATUS = Struct("Tier.status", [Field("conditions", AnyJSON())])
TIER_ACTIONS = {"default": "Deny", "kube-admin": "Pass", "kube-baseline": "Pass"}
# clientv3 EnsureInitialized: name -> (defaultAction, order).
SEEDED_TIERS = {
    "default": ("Deny", 1_000_000.0),
    "kube-admin": ("Pass", 1_000.0),
    "kube-baseline": ("Pass", 10_000_000.0),
}


def validate_tier(tier: Resource) -> list[ErroredField]:
    wanted = TIER_ACTIONS.get(tier.name)
    if wanted and tier.spec.get("defaultAction", "Deny") != wanted:
        return [ErroredField("Tier.spec.defaultAction", f"The '{tier.name}' tier must have default action '{wanted}'")]
    return []


def default_tier(tier: Resource) -> None:
    """``resources.DefaultTierFields``: no order is the default tier's 1,000,000, no defaultAction is Deny."""
    tier.spec.setdefault("order", DEFAULT_TIER_ORDER)
    tier.spec.setdefault("defaultAction", "Deny")
    tier.spec = {f.name: tier.spec[f.name] for f in TIER_SPEC.fields if f.name in tier.spec}


# -- NetworkPolicy, GlobalNetworkPolicy, GlobalNetworkSet ----------------------

LABEL_TIER = "projectcalico.org/tier"
KUBERNETES_POLICY_PREFIX = "knp.default."  # converter.KubernetesNetworkPolicyEtcdPrefix: converted k8s policies
_POLICY_TYPES = ListOf(Enum("Ingress", "Egress"))
_HINTS = ListOf(Enum("AssumeNeededOnEveryNode"))
NETWORKPOLICY_SPEC = Struct(
    "NetworkPolicy.spec",
    [
        Field("tier", Str()),
        Field("order", Float(), omit="absent"),
        Field("ingress", ListOf(RULE, max_items=1024)),
        Field("egress", ListOf(RULE, max_items=1024)),
        Field("selector", Selector(allow_global=False)),
        Field("types", _POLICY_TYPES),
        Field("serviceAccountSelector", Selector(allow_global=False)),
        Field("performanceHints", _HINTS),
    ],
)
GLOBALNETWORKPOLICY_SPEC = Struct(
    "GlobalNetworkPolicy.spec",
    [
        Field("tier", Str()),
        Field("order", Float(), omit="absent"),
        Field("ingress", ListOf(RULE, max_items=1024)),
        Field("egress", ListOf(RULE, max_items=1024)),
        Field("selector", Selector(allow_global=False)),
        Field("types", _POLICY_TYPES),
        Field("doNotTrack", Bool()),
        Field("preDNAT", Bool()),
        Field("applyOnForward", Bool()),
        Field("serviceAccountSelector", Selector(allow_global=False)),
        Field("namespaceSelector", Selector(allow_global=False)),
        Field("performanceHints", _HINTS),
    ],
)
GLOBALNETWORKSET_SPEC = Struct("GlobalNetworkSet.spec", [Field("nets", ListOf(CIDR()))])


def validate_through_policy(resource: Resource) -> list[ErroredField]:
    """Calico's rules for policy kinds as :mod:`pycni.policy` reads them (masked nets, ports need a protocol, ...).

    The schema above checks types and field names; the policy model is the one
    place that knows what Calico's validator accepts in a rule, so every kind
    with rules is checked by parsing it as the policy engine will.
    """
    from pycni.policy.calico_model import parse_calico
    from pycni.policy.errors import PolicyError

    metadata = {key: resource.metadata[key] for key in ("name", "namespace", "labels") if resource.metadata.get(key)}
    document = {"apiVersion": API_VERSION, "kind": resource.kind, "metadata": metadata, "spec": resource.spec}
    try:
        parse_calico(document)
    except PolicyError as error:
        return [
            ErroredField(f"{resource.kind}.{p.path}" if p.path else resource.kind, p.message) for p in error.problems
        ]
    return []


def default_policy(policy: Resource) -> None:
    """clientv3's policy Create/Update: ``types`` from the rules; the tier label, off the default tier."""
    spec = policy.spec
    if not spec.get("types"):
        ingress, egress = bool(spec.get("ingress")), bool(spec.get("egress"))
        spec["types"] = ["Ingress", "Egress"] if ingress and egress else ["Egress"] if egress else ["Ingress"]
    schema = NETWORKPOLICY_SPEC if policy.kind == "NetworkPolicy" else GLOBALNETWORKPOLICY_SPEC
    policy.spec = {f.name: spec[f.name] for f in schema.fields if f.name in spec}
    tier = spec.get("tier") or "default"
    if tier != "default":
        policy.set_meta("labels", dict(sorted({**policy.labels, LABEL_TIER: tier}.items())))


CLUSTERINFO_SPEC = Struct(
    "ClusterInformation.spec",
    [
        Field("clusterGUID", Str()),
        Field("clusterType", Str()),
        Field("calicoVersion", Str()),
        Field("datastoreReady", Bool(), omit="absent"),
        Field("variant", Str()),
    ],
)


# -- Kubernetes stand-ins ------------------------------------------------------


@dataclass(frozen=True)
class KubernetesKind:
    """A Kubernetes kind pycni keeps for policy (there is no API server): v1 Namespace, v1 Pod, k8s NetworkPolicy."""

    kind: str
    api_version: str
    plural: str
    aliases: tuple[str, ...]
    namespaced: bool

    def parse(self, document: Any) -> Any:
        """The object as :mod:`pycni.policy.k8s` reads it, validated as the API server would (PolicyError)."""
        from pycni.policy import k8s

        parsers = {"Namespace": k8s.parse_namespace, "Pod": k8s.parse_pod, "NetworkPolicy": k8s.parse_network_policy}
        return parsers[self.kind](document)


KUBERNETES_KINDS: dict[tuple[str, str], KubernetesKind] = {
    (k.api_version, k.kind): k
    for k in (
        KubernetesKind("Namespace", "v1", "namespaces", ("namespace", "namespaces", "ns"), False),
        KubernetesKind("Pod", "v1", "pods", ("pod", "pods", "po"), True),
        KubernetesKind(
            "NetworkPolicy",
            "networking.k8s.io/v1",
            "networkpolicies",
            (
                "networkpolicy.networking.k8s.io",
                "networkpolicies.networking.k8s.io",
                "kubernetesnetworkpolicy",
                "kubernetesnetworkpolicies",
                "k8snp",
            ),
            True,
        ),
    )
}
KUBERNETES_ALIASES = {alias: k for k in KUBERNETES_KINDS.values() for alias in k.aliases}


def kubernetes_kind_for_alias(text: str) -> KubernetesKind | None:
    return KUBERNETES_ALIASES.get(text.lower())


# -- the registry ------------------------------------------------------------

KINDS: dict[str, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            "IPPool",
            "ippools",
            IPPOOL_SPEC,
            ("ippool", "ippools", "ipp", "ipps", "pool", "pools"),
            status=Struct("IPPool.status", [Field("conditions", AnyJSON())]),
            validate=validate_ippool,
            defaults=default_ippool,
        ),
        KindSpec(
            "IPAMConfiguration",
            "ipamconfigurations",
            IPAMCONFIG_SPEC,
            ("ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"),
            validate=validate_ipamconfig,
            singleton="default",
        ),
        KindSpec(
            "BGPConfiguration",
            "bgpconfigurations",
            BGPCONFIG_SPEC,
            ("bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"),
            validate=validate_bgpconfig,
        ),
        KindSpec(
            "BGPPeer",
            "bgppeers",
            BGPPEER_SPEC,
            ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"),
            validate=validate_bgppeer,
        ),
        KindSpec(
            "Node",
            "nodes",
            NODE_SPEC,
            ("node", "nodes", "no", "nos"),
            status=NODE_STATUS,
            status_always=True,
            validate=validate_node,
        ),
        KindSpec(
            "FelixConfiguration",
            "felixconfigurations",
            FELIXCONFIG_SPEC,
            ("felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"),
            validate=validate_felixconfig,
        ),
        KindSpec(
            "WorkloadEndpoint",
            "workloadendpoints",
            WEP_SPEC,
            ("workloadendpoint", "workloadendpoints", "wep", "weps"),
            namespaced=True,
            validate=validate_wep,
        ),
        KindSpec(
            "HostEndpoint",
            "hostendpoints",
            HEP_SPEC,
            ("hostendpoint", "hostendpoints", "hep", "heps"),
            validate=validate_hep,
        ),
        KindSpec(
            "Profile",
            "profiles",
            PROFILE_SPEC,
            ("profile", "profiles", "pro", "pros"),
            validate=validate_through_policy,
        ),
        KindSpec(
            "Tier",
            "tiers",
            TIER_SPEC,
            ("tier", "tiers"),
            status=TIER_STATUS,
            status_always=True,
            validate=validate_tier,
            defaults=default_tier,
            name_pattern=NAME_LABEL,
            name_max=63,
        ),
        KindSpec(
            "NetworkPolicy",
            "networkpolicies",
            NETWORKPOLICY_SPEC,
            ("networkpolicy", "networkpolicies", "policy", "np", "policies", "pol", "pols"),
            namespaced=True,
            validate=validate_through_policy,
            defaults=default_policy,
        ),
        KindSpec(
            "GlobalNetworkPolicy",
            "globalnetworkpolicies",
            GLOBALNETWORKPOLICY_SPEC,
            ("globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"),
            validate=validate_through_policy,
            defaults=default_policy,
        ),
        KindSpec(
            "GlobalNetworkSet",
            "globalnetworksets",
            GLOBALNETWORKSET_SPEC,
            ("globalnetworkset", "globalnetworksets", "gnetsets"),
            validate=validate_through_policy,
        ),
        KindSpec(
            "ClusterInformation",
            "clusterinformations",
            CLUSTERINFO_SPEC,
            ("clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos"),
            read_only=True,
        ),
    )
}
ALIASES: dict[str, KindSpec] = {alias: spec for spec in KINDS.values() for alias in (*spec.aliases, spec.kind.lower())}


def kind_for_alias(text: str) -> KindSpec | None:
    """calicoctl's lookup of a KIND argument: its aliases, case-insensitive (``ippool``, ``IPPools``, ``ipp``)."""
    return ALIASES.get(text.lower())
