# frozen_string_literal: true

module Nightmare
  # The settings of the +nightmare+ directive, checked when the config file
  # is loaded so a typo fails at start (or keeps the old config on HUP)
  # instead of surfacing in the front. Every setting (its name, how its value
  # reads, its default, nginx's name for it) is defined once, in the front's
  # table (ext/nightmare/front/src/config/settings.rs); the README's table
  # of settings is made from it (rake readme). Sizes take nginx's
  # "16k"/"1m"/"1g" forms and times "500ms"/"30s"/"5m", besides plain
  # Integers (bytes) and Numerics (seconds).
  class Options
    attr_reader :values

    # +setting+ is the directive's argument: true, false, or a Hash of
    # settings; a block may set them instead, one call per setting.
    def self.from_directive(setting, &block)
      case setting
      when false, nil then false
      when true then new(block ? Builder.collect(&block) : {})
      when Hash then new(block ? setting.merge(Builder.collect(&block)) : setting)
      else
        raise ArgumentError, "nightmare=#{setting.inspect}: use true, false, or a Hash of settings"
      end
    end

    # +try_files+ (a Nightmare::TryFiles), +status_page+ (a
    # Nightmare::StatusPath), +upstreams+ (Nightmare::Upstreams), +hsts+
    # (Nightmare::Hsts) and +error_pages+ (Nightmare::ErrorPages, read)
    # come from their own directives. Raises ArgumentError naming a setting that
    # is unknown or does not read.
    def initialize(given, try_files: nil, status_page: nil, upstreams: nil, hsts: nil, error_pages: [],
                   sendfile_roots: [])
      @given = given
      @values = Nightmare::Native.read_settings(given)
                                 .merge(try_files: try_files&.to_native, status_page: status_page&.to_native,
                                        upstreams: upstreams&.to_native, hsts: hsts&.value,
                                        error_pages: error_pages, sendfile_roots: sendfile_roots).freeze
      freeze
    end

    # The same settings, with what the front serves itself and where it
    # sends requests besides the workers.
    def with(try_files:, status_page:, upstreams:, hsts: nil, error_pages: [], sendfile_roots: [])
      Options.new(@given, try_files: try_files, status_page: status_page, upstreams: upstreams, hsts: hsts,
                          error_pages: error_pages, sendfile_roots: sendfile_roots)
    end

    # A setting as read: sizes in bytes, times in seconds, "auto" as given.
    def [](name)
      @values.fetch(name)
    end

    def ==(other)
      other.is_a?(Options) && other.values == values
    end

    # What Nightmare::Native::Front.start takes.
    def to_native
      @values.dup
    end

    # Collects settings from the block form:
    #   nightmare do
    #     client_max_body_size "10m"
    #     threads 2
    #   end
    # Unknown names are reported with the others, when the settings are read.
    class Builder < BasicObject
      def self.collect(&block)
        builder = new
        builder.instance_eval(&block)
        builder.__settings
      end

      def initialize
        @settings = {}
      end

      def __settings
        @settings
      end

      def method_missing(name, *values)
        unless values.size == 1
          ::Kernel.raise ::ArgumentError, "nightmare #{name}: give one value (#{values.size} given)"
        end
        @settings[name] = values.first
      end

      def respond_to_missing?(*) = true
    end
  end
end
