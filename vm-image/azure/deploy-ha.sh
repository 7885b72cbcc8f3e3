#!/usr/bin/env bash
# Highly available Tollgate for AKS egress (Azure CLI + the ARM template azuredeploy-ha.json):
#
#   - INSTANCES (>= 2) appliances in a VM scale set, each NIC with IP forwarding and its own
#     Standard public IP (instance-level); each instance SNATs to its own private IP, which Azure
#     maps 1:1 to that public IP, so replies come back to the instance that owns the flow and no
#     state is shared between instances
#   - an internal Standard Load Balancer, frontend ILB_IP in the appliance subnet, one HA-ports
#     rule (all protocols, all ports) and a health probe on Tollgate's health endpoint
#   - the AKS subnet's route table: 0.0.0.0/0 -> VirtualAppliance ILB_IP
#
# The instances share one custom data; the configuration is a template (tollgate.toml with the
# appliance address replaced by @IP@/@CIDR@/@GATEWAY@), filled in at boot by
# tollgate-config.service from the instance's own address.
#
#   vm-image/azure/deploy-ha.sh             network + image as deploy.sh, then the HA template
#   vm-image/azure/deploy-ha.sh params FILE write the template parameters to FILE, run nothing
#
# Settings (environment): everything deploy.sh takes, plus INSTANCES [2], ILB_IP [10.42.8.100],
# PROBE_PROTOCOL [Http] PROBE_PORT [9090] PROBE_PATH [/healthz] (until `tollgate run` serves
# /healthz, PROBE_PROTOCOL=Tcp PROBE_PORT=22 only proves that the instance is up), ZONES [none,
# e.g. "1 2 3"], SKIP_AKS [0] (1: stop after the appliances and the route table).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
RG=${RG:-tollgate-aks}
LOCATION=${LOCATION:-westeurope}
CONFIG=${CONFIG:-$here/tollgate.toml}
ADMIN_USER=${ADMIN_USER:-azureuser}
SSH_KEY=${SSH_KEY:-$HOME/.ssh/id_rsa.pub}
INSTANCES=${INSTANCES:-2}
ILB_IP=${ILB_IP:-10.42.8.100}
PROBE_PROTOCOL=${PROBE_PROTOCOL:-Http}
PROBE_PORT=${PROBE_PORT:-9090}
PROBE_PATH=${PROBE_PATH:-/healthz}
ZONES=${ZONES:-}
VM_SIZE=${VM_SIZE:-Standard_D2s_v5}
ACCEL_NET=${ACCEL_NET:-true}
SKIP_AKS=${SKIP_AKS:-0}
NVA_IP=10.42.8.4          # the address tollgate.toml was written for
NVA_GW=10.42.8.1
VNET=tollgate-vnet
AKS_SUBNET=aks-subnet
NVA_SUBNET=appliance-subnet
RT=aks-egress-rt
IMAGE=tollgate-bookworm

log() { printf '[deploy-ha %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# The per-instance template: the fixed appliance address becomes placeholders.
render_template() {
  sed -e "s|$NVA_IP/24|@CIDR@|g" -e "s|\"$NVA_IP\"|\"@IP@\"|g" -e "s|\"$NVA_IP:|\"@IP@:|g" \
      -e "s|\"$NVA_GW\"|\"@GATEWAY@\"|g" "$CONFIG"
}

# Writes the ARM parameters file ($1) with IMAGE_ID and the rendered custom data.
write_params() {
  local file=$1 tmpl cdata
  tmpl=$(mktemp --suffix=.toml.in)
  cdata=$(mktemp)
  render_template > "$tmpl"
  grep -q '@IP@' "$tmpl" || { echo "deploy-ha.sh: $CONFIG does not use $NVA_IP: cannot template it" >&2; exit 1; }
  "$here/render-custom-data.sh" "$tmpl" > "$cdata"
  python3 - "$file" "$cdata" <<'PY'
import json, os, sys
out, cdata = sys.argv[1], sys.argv[2]
env = os.environ
zones = env.get("ZONES", "").split()
key_path = env.get("SSH_KEY", "")
key = open(key_path).read().strip() if key_path and os.path.exists(key_path) else "ssh-rsa AAAA... replace-me"
p = {
    "vnetName": env.get("VNET", "tollgate-vnet"),
    "applianceSubnetName": env.get("NVA_SUBNET", "appliance-subnet"),
    "ilbFrontendIp": env["ILB_IP"],
    "imageId": env.get("IMAGE_ID", "/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/images/tollgate-bookworm"),
    "instanceCount": int(env["INSTANCES"]),
    "vmSize": env["VM_SIZE"],
    "acceleratedNetworking": env["ACCEL_NET"] == "true",
    "adminUsername": env["ADMIN_USER"],
    "sshPublicKey": key,
    "customData": open(cdata).read(),
    "probeProtocol": env["PROBE_PROTOCOL"],
    "probePort": int(env["PROBE_PORT"]),
    "probePath": env["PROBE_PATH"],
    "zones": zones,
}
doc = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {k: {"value": v} for k, v in p.items()},
}
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
PY
  rm -f "$tmpl" "$cdata"
}
export ILB_IP INSTANCES VM_SIZE ACCEL_NET ADMIN_USER SSH_KEY PROBE_PROTOCOL PROBE_PORT PROBE_PATH ZONES VNET NVA_SUBNET

case "${1:-all}" in
  params)
    [ $# -eq 2 ] || { echo "usage: $0 params FILE" >&2; exit 2; }
    write_params "$2"; log "wrote $2"; exit 0 ;;
  all) ;;
  *) echo "usage: $0 [all|params FILE]" >&2; exit 2 ;;
esac

command -v az >/dev/null || { echo "deploy-ha.sh: the Azure CLI (az) is required" >&2; exit 1; }

# Network, image, NSG, route table, AKS: the same steps as the single appliance, without its VM.
if ! az image show -g "$RG" -n "$IMAGE" -o none 2>/dev/null; then
  log "network and image (deploy.sh steps 1-2)"
  az group create -n "$RG" -l "$LOCATION" -o none
  az network vnet create -g "$RG" -n "$VNET" --address-prefixes 10.42.0.0/16 \
    --subnet-name "$AKS_SUBNET" --subnet-prefixes 10.42.0.0/22 -o none
  az network vnet subnet create -g "$RG" --vnet-name "$VNET" -n "$NVA_SUBNET" \
    --address-prefixes 10.42.8.0/24 -o none
  VHD=${VHD:-$here/../out/tollgate-bookworm.vhd}
  [ -f "$VHD" ] || { echo "deploy-ha.sh: $VHD not found: run vm-image/build.sh first" >&2; exit 1; }
  SA=${SA:-tg$(az account show --query id -o tsv | tr -d '-' | cut -c1-10)$(printf '%s' "$RG" | md5sum | cut -c1-8)}
  az storage account create -g "$RG" -n "$SA" -l "$LOCATION" --sku Standard_LRS \
    --kind StorageV2 --allow-blob-public-access false -o none
  KEY=$(az storage account keys list -g "$RG" -n "$SA" --query '[0].value' -o tsv)
  az storage container create --account-name "$SA" --account-key "$KEY" -n vhds -o none
  az storage blob upload --account-name "$SA" --account-key "$KEY" -c vhds \
    -n "$IMAGE.vhd" -f "$VHD" --type page --overwrite -o none
  BLOB_URL=$(az storage blob url --account-name "$SA" --account-key "$KEY" -c vhds -n "$IMAGE.vhd" -o tsv)
  az image create -g "$RG" -n "$IMAGE" --os-type Linux --hyper-v-generation V1 --source "$BLOB_URL" -o none
fi
IMAGE_ID=$(az image show -g "$RG" -n "$IMAGE" --query id -o tsv)
export IMAGE_ID

params=$(mktemp --suffix=.json)
trap 'rm -f "$params"' EXIT
write_params "$params"
log "ARM template azuredeploy-ha.json: $INSTANCES instances behind the ILB $ILB_IP (HA ports, probe $PROBE_PROTOCOL:$PROBE_PORT)"
az deployment group create -g "$RG" -n tollgate-ha --template-file "$here/azuredeploy-ha.json" \
  --parameters "@$params" -o none

log "instance public IPs (each instance's SNAT egress address):"
az vmss list-instance-public-ips -g "$RG" -n tollgate-vmss --query '[].ipAddress' -o tsv

log "route table $RT: 0.0.0.0/0 -> VirtualAppliance $ILB_IP, on $AKS_SUBNET"
az network route-table create -g "$RG" -n "$RT" --disable-bgp-route-propagation true -o none
az network route-table route create -g "$RG" --route-table-name "$RT" -n default-via-tollgate \
  --address-prefix 0.0.0.0/0 --next-hop-type VirtualAppliance --next-hop-ip-address "$ILB_IP" -o none
az network vnet subnet update -g "$RG" --vnet-name "$VNET" -n "$AKS_SUBNET" --route-table "$RT" -o none

if [ "$SKIP_AKS" = 1 ]; then log "SKIP_AKS=1: done"; exit 0; fi
# Identity, role assignments and the cluster: exactly as deploy.sh step 5.
AKS_NAME=${AKS_NAME:-tollgate-aks}
NETWORK_PLUGIN=${NETWORK_PLUGIN:-kubenet}
az identity create -g "$RG" -n "$AKS_NAME-id" -o none
ID_RES=$(az identity show -g "$RG" -n "$AKS_NAME-id" --query id -o tsv)
ID_PRINCIPAL=$(az identity show -g "$RG" -n "$AKS_NAME-id" --query principalId -o tsv)
RT_ID=$(az network route-table show -g "$RG" -n "$RT" --query id -o tsv)
SUBNET_ID=$(az network vnet subnet show -g "$RG" --vnet-name "$VNET" -n "$AKS_SUBNET" --query id -o tsv)
for scope in "$RT_ID" "$SUBNET_ID"; do
  az role assignment create --assignee-object-id "$ID_PRINCIPAL" \
    --assignee-principal-type ServicePrincipal --role "Network Contributor" --scope "$scope" -o none
done
net_args=(--network-plugin "$NETWORK_PLUGIN" --service-cidr 10.43.0.0/16 --dns-service-ip 10.43.0.10)
if [ "$NETWORK_PLUGIN" = kubenet ]; then net_args+=(--pod-cidr 10.244.0.0/16); fi
log "AKS $AKS_NAME ($NETWORK_PLUGIN, outbound type userDefinedRouting)"
az aks create -g "$RG" -n "$AKS_NAME" -l "$LOCATION" --vnet-subnet-id "$SUBNET_ID" "${net_args[@]}" \
  --outbound-type userDefinedRouting --load-balancer-sku standard \
  --vm-set-type VirtualMachineScaleSets --node-count 2 \
  --enable-managed-identity --assign-identity "$ID_RES" --generate-ssh-keys -o none
log "done. Validate egress: docs/deploy-azure.md"
