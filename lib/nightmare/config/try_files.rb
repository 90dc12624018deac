# frozen_string_literal: true

module Nightmare
  # What the +try_files+ directive says, checked when the config is loaded:
  # the static root, the candidates to try ($uri and forms of it, as in
  # nginx), and the few choices about what may be served.
  class TryFiles
    DEFAULT_CANDIDATES = ["$uri"].freeze
    OPTIONS = {
      # Serve names starting with a dot (.well-known, .htaccess...).
      dotfiles: false,
      # Follow symlinks that lead out of the root (Capistrano's shared
      # public/assets); off, such files go to the application.
      follow_symlinks: false,
      # Serve NAME.br or NAME.gz beside a text file when the client takes it.
      precompressed: true,
    }.freeze

    attr_reader :root, :candidates, :options

    def initialize(root, candidates, options)
      @root = check_root(root)
      @candidates = check_candidates(candidates)
      @options = check_options(options)
      freeze
    end

    def to_native
      { root: root, candidates: candidates, dotfiles: options[:dotfiles],
        symlinks_outside: options[:follow_symlinks], precompressed: options[:precompressed] }
    end

    def ==(other)
      other.is_a?(TryFiles) && other.to_native == to_native
    end

    private

    def check_root(root)
      String === root or raise ArgumentError, "try_files needs a root directory first: try_files=#{root.inspect}"
      path = File.expand_path(root)
      File.directory?(path) && File.readable?(path) or
        raise ArgumentError, "try_files root=#{root.inspect} is not a readable directory"
      path
    end

    def check_candidates(candidates)
      # nginx's named location at the end (`@app`) is where the request
      # goes anyway: the application.
      candidates = candidates[0...-1] if candidates.last.is_a?(String) && candidates.last.start_with?("@")
      candidates = DEFAULT_CANDIDATES if candidates.empty?
      candidates.each { |candidate| check_candidate(candidate) }
      candidates.map { |candidate| candidate.dup.freeze }.freeze
    end

    def check_candidate(candidate)
      String === candidate or raise ArgumentError, "try_files candidate=#{candidate.inspect}: give a String like \"$uri.html\""
      if candidate.start_with?("@") || candidate.start_with?("=")
        raise ArgumentError, "try_files #{candidate.inspect}: only a last @name is understood (the application " \
                             "answers what no file does)"
      end
      if candidate.end_with?("/")
        raise ArgumentError, "try_files #{candidate.inspect}: directories are not served (no listings); " \
                             "name the file, like \"$uri/index.html\""
      end
      literal = candidate.gsub("$uri", "")
      if literal.include?("$")
        raise ArgumentError, "try_files #{candidate.inspect}: only $uri may be used (the request's path)"
      end
      if literal.split("/").include?("..") || !(candidate.start_with?("$uri") || candidate.start_with?("/"))
        raise ArgumentError, "try_files #{candidate.inspect}: a candidate starts with $uri or / and never " \
                             "climbs with .."
      end
    end

    def check_options(options)
      unknown = options.keys - OPTIONS.keys
      unless unknown.empty?
        raise ArgumentError, "try_files: unknown option #{unknown.map(&:inspect).join(', ')} " \
                             "(known: #{OPTIONS.keys.join(', ')})"
      end
      OPTIONS.to_h do |name, default|
        value = options.fetch(name, default)
        [true, false].include?(value) or raise ArgumentError, "try_files #{name}=#{value.inspect} not a boolean"
        [name, value]
      end.freeze
    end
  end
end
