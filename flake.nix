{
  # `nix develop` gives a shell with everything the six projects and the tests need:
  # Python 3.12 with numpy, pillow, soundfile, matplotlib, pytest and tinygrad 0.14.0 (from its
  # wheel, pinned by hash), clang for tinygrad's CPU device, and on the Jetson (aarch64-linux) the
  # CUDA pieces tinygrad's CUDA device loads (nvrtc, cudart headers) from jetpack-nixos.
  # NV=1 needs none of CUDA: the bundled Tegra backend talks to nvgpu/nvmap directly.
  description = "tinygrad 0.14.0 ML projects for the Jetson Orin AGX, with a Tegra (nvgpu/nvmap) backend";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    jetpack-nixos.url = "github:anduril/jetpack-nixos";
    jetpack-nixos.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, jetpack-nixos, ... }:
    let
      # keep in step with pyproject.toml (a test checks that the two agree)
      tinygradVersion = "0.14.0";
      tinygradWheelHash = "sha256-0qW+ozxjf98QWWNjIymHaz0yU9OClawf/S/4FkbZO+M=";

      pkgsFor = system:
        let onJetson = system == "aarch64-linux";
        in import nixpkgs {
          inherit system;
          # Orin is compute capability 8.7; jetpack-nixos picks its Jetson CUDA 12.6 (JetPack 6) from this
          config = { allowUnfree = true; } // (if onJetson then { cudaSupport = true; cudaCapabilities = [ "8.7" ]; } else { });
          overlays = if onJetson then [
            jetpack-nixos.overlays.default
            (final: _: { cudaPackages = final.cudaPackages_12_6; })
          ] else [ ];
        };

      tinygradFor = python: python.pkgs.buildPythonPackage {
        pname = "tinygrad";
        version = tinygradVersion;
        format = "wheel";
        src = python.pkgs.fetchPypi {
          pname = "tinygrad";
          version = tinygradVersion;
          format = "wheel";
          dist = "py3";
          python = "py3";
          hash = tinygradWheelHash;
        };
        doCheck = false;   # the wheel ships no tests; ours run against it
      };

      shellFor = system:
        let
          pkgs = pkgsFor system;
          lib = pkgs.lib;
          onJetson = system == "aarch64-linux";
          python = pkgs.python312;
          pythonEnv = python.withPackages (ps: [ ps.numpy ps.pillow ps.soundfile ps.matplotlib ps.pytest (tinygradFor python) ]);
          cuda = pkgs.cudaPackages;
          # one prefix with include/ (cuda_fp16.h, which tinygrad's CUDA compiler passes as -I$CUDA_PATH/include)
          # and lib/ (libnvrtc, libcudart)
          cudaForTinygrad = pkgs.symlinkJoin {
            name = "cuda-for-tinygrad";
            paths = [ (lib.getDev cuda.cuda_cudart) (lib.getLib cuda.cuda_cudart) (lib.getDev cuda.cuda_nvrtc) (lib.getLib cuda.cuda_nvrtc) (lib.getDev cuda.cuda_cccl) ];
          };
        in
        pkgs.mkShell {
          name = "orin-tinygrad";
          packages = [ pythonEnv pkgs.clang pkgs.nix ] ++ lib.optionals onJetson [ cudaForTinygrad ];
          shellHook = ''
            # `common` and `backend` import from the checkout, as after `pip install -e .`
            export PYTHONPATH="$PWD''${PYTHONPATH:+:$PYTHONPATH}"
          '' + lib.optionalString onJetson ''
            export CUDA_PATH=${cudaForTinygrad}
            # libcuda.so is the L4T driver's own: /usr/lib/aarch64-linux-gnu/nvidia on JetPack (Ubuntu),
            # /run/opengl-driver/lib on NixOS with the jetpack-nixos module
            export LD_LIBRARY_PATH="${cudaForTinygrad}/lib:/usr/lib/aarch64-linux-gnu/nvidia:/run/opengl-driver/lib''${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "Jetson shell: NV=1 uses the Tegra backend, CUDA=1 uses CUDA ${cuda.cudaMajorMinorVersion or "12.6"} (CUDA_PATH=$CUDA_PATH)"
          '' + ''
            echo "tinygrad ${tinygradVersion} on Python ${python.version}: try python3 -m common.device"
          '';
        };
    in
    {
      devShells = {
        x86_64-linux.default = shellFor "x86_64-linux";
        aarch64-linux.default = shellFor "aarch64-linux";
      };
    };
}
